//! The compatibility rules: walk a writer schema and a reader schema side by
//! side and list everything the reader rejects that the writer allows.
//!
//! Every record is written with one schema and read with another. The reader
//! must accept everything the writer allows; where it may not, that is an
//! [`Incompatibility`]. [`check`] picks the pairs a [`Mode`] asks for: in
//! `BACKWARD` the new schema reads what the previous one wrote, in `FORWARD`
//! the previous one reads what the new one writes.
//!
//! How the walk goes:
//!
//! - `$ref` (to `#/...` in the same document) and `allOf` make a schema a
//!   conjunction. Every part of the reader must accept the writer; the
//!   writer fits a reader part if any one of its own parts does (the
//!   writer's parts are never combined, which is conservative).
//! - `oneOf`/`anyOf` are alternatives: every writer branch (or the writer
//!   itself, without them) must fit some reader branch.
//! - Otherwise keyword by keyword (type, enum and const, numbers, strings,
//!   arrays, objects), each rule only where the writer can produce values it
//!   applies to. A keyword no rule covers that differs is a break.
//!
//! A pair of locations already being compared further up is taken as
//! compatible, which ends recursive schemas; each pair's result is kept, so
//! alternatives inside alternatives stay cheap; a depth and a step limit end
//! anything else a hostile schema could make of it, with a break.
//!
//! Findings carry a pointer into both documents and say which one names the
//! thing; rendering turns them into paths into the *new* schema (or the old
//! one, for what only it has, saying so) and words the change from the old
//! version to the new one.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which earlier versions a new schema must stay compatible with, and in
/// which direction data flows between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Mode {
    /// Consumers on the new schema read data written with the latest
    /// previous one (consumers upgrade first).
    Backward,
    /// As `Backward`, against every previous version.
    BackwardTransitive,
    /// Consumers on the latest previous schema read data written with the
    /// new one (producers upgrade first).
    Forward,
    /// As `Forward`, against every previous version.
    ForwardTransitive,
    /// Both `Backward` and `Forward` against the latest previous version.
    Full,
    /// Both, against every previous version.
    FullTransitive,
    /// No check.
    None,
}

impl Mode {
    /// Every mode, in the order registries list them.
    pub const ALL: [Mode; 7] = [
        Mode::Backward,
        Mode::BackwardTransitive,
        Mode::Forward,
        Mode::ForwardTransitive,
        Mode::Full,
        Mode::FullTransitive,
        Mode::None,
    ];

    /// The registry name: `BACKWARD`, `BACKWARD_TRANSITIVE`, ..., `NONE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Backward => "BACKWARD",
            Mode::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Mode::Forward => "FORWARD",
            Mode::ForwardTransitive => "FORWARD_TRANSITIVE",
            Mode::Full => "FULL",
            Mode::FullTransitive => "FULL_TRANSITIVE",
            Mode::None => "NONE",
        }
    }

    /// Whether the new schema is checked against every previous version
    /// rather than the latest one only.
    pub fn is_transitive(self) -> bool {
        matches!(
            self,
            Mode::BackwardTransitive | Mode::ForwardTransitive | Mode::FullTransitive
        )
    }

    /// Whether the new schema must read data written with previous ones.
    pub fn checks_backward(self) -> bool {
        matches!(
            self,
            Mode::Backward | Mode::BackwardTransitive | Mode::Full | Mode::FullTransitive
        )
    }

    /// Whether previous schemas must read data written with the new one.
    pub fn checks_forward(self) -> bool {
        matches!(
            self,
            Mode::Forward | Mode::ForwardTransitive | Mode::Full | Mode::FullTransitive
        )
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = ParseModeError;

    /// A registry name, in any case: `backward_transitive` is
    /// [`Mode::BackwardTransitive`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim();
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| ParseModeError {
                input: s.to_owned(),
            })
    }
}

/// A compatibility mode name that is not one of [`Mode::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseModeError {
    input: String,
}

impl fmt::Display for ParseModeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Mode::ALL.iter().map(|m| m.as_str()).collect();
        write!(
            f,
            "unknown compatibility mode `{}`; expected one of {}",
            self.input,
            names.join(", ")
        )
    }
}

impl std::error::Error for ParseModeError {}

/// One breaking difference between two schemas.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Incompatibility {
    /// Where: a JSON pointer (RFC 6901) into the new schema, e.g.
    /// `/properties/customer/type`, or `#` for the whole schema. For what
    /// only the old schema has (a removed property, a dropped requirement)
    /// it points into the old one, and `message` ends with "(path in the old
    /// schema)". From [`reader_rejects`], "new" is the reader and "old" the
    /// writer.
    pub path: String,
    /// What changed and why it breaks, e.g. "type narrowed from `number` to
    /// `integer`: the new schema rejects non-integer numbers".
    pub message: String,
    /// The version it breaks against (the name given to [`check`]); `None`
    /// from [`reader_rejects`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub against: Option<String>,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(version) = &self.against {
            write!(f, "against version {version}: ")?;
        }
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Everything that a reader using `reader` rejects although `writer` allows
/// it. Empty: every instance valid under `writer` is valid under `reader`, as
/// far as the rules can tell (they err towards reporting a break).
///
/// Paths point into `reader` (or into `writer` for what only it has, said in
/// the message), and messages word each difference as a change from `writer`
/// to `reader`.
pub fn reader_rejects(writer: &Value, reader: &Value) -> Vec<Incompatibility> {
    compare_documents(writer, reader, Roles::STANDALONE)
}

/// Check `new` against earlier versions `previous` (oldest first, each with
/// its version name) in `mode`.
///
/// `BACKWARD`: `new` reads data written with the latest previous version.
/// `FORWARD`: the latest previous version reads data written with `new`.
/// `FULL`: both. The `_TRANSITIVE` forms do the same against every previous
/// version; `NONE` checks nothing. Each [`Incompatibility`] names the version
/// it breaks against in `against`.
pub fn check(mode: Mode, new: &Value, previous: &[(String, Value)]) -> Vec<Incompatibility> {
    let against = if mode.is_transitive() {
        previous
    } else {
        &previous[previous.len().saturating_sub(1)..]
    };
    let mut out = Vec::new();
    for (version, old) in against {
        let mut found = Vec::new();
        if mode.checks_backward() {
            found.extend(compare_documents(old, new, Roles::BACKWARD));
        }
        if mode.checks_forward() {
            found.extend(compare_documents(new, old, Roles::FORWARD));
        }
        out.extend(found.into_iter().map(|mut i| {
            i.against = Some(version.clone());
            i
        }));
    }
    out
}

fn compare_documents(writer: &Value, reader: &Value, roles: Roles) -> Vec<Incompatibility> {
    let mut comparison = Comparison {
        roles,
        in_progress: HashMap::new(),
        done: HashMap::new(),
        lowest_assumed: usize::MAX,
        depth: 0,
        steps: 0,
    };
    let mut found = Vec::new();
    comparison.compare(&Node::root(writer), &Node::root(reader), &mut found);
    let mut seen = HashSet::new();
    found
        .into_iter()
        .map(|f| f.render(roles))
        .filter(|i| seen.insert((i.path.clone(), i.message.clone())))
        .collect()
}

/// Deeper than this, a comparison gives up with a break (and keeps the
/// stack small on any thread).
const MAX_DEPTH: usize = 128;
/// More comparisons than this for one pair of documents, and it gives up
/// with a break: alternatives tried inside alternatives multiply.
const MAX_STEPS: usize = 200_000;

/// Keywords that never change which instances are valid.
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$anchor",
    "$comment",
    "$defs",
    "definitions",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// Keywords the rules judge (when well formed).
const JUDGED: &[&str] = &[
    "type",
    "enum",
    "const",
    "properties",
    "additionalProperties",
    "required",
    "minProperties",
    "maxProperties",
    "items",
    "prefixItems",
    "additionalItems",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "$ref",
    "allOf",
    "oneOf",
    "anyOf",
];

// JSON types as bits; `integer` values are also `number` values.
const NULL: u8 = 1;
const BOOLEAN: u8 = 1 << 1;
const OBJECT: u8 = 1 << 2;
const ARRAY: u8 = 1 << 3;
const NUMBER: u8 = 1 << 4;
const INTEGER: u8 = 1 << 5;
const STRING: u8 = 1 << 6;
const ANY_TYPE: u8 = NULL | BOOLEAN | OBJECT | ARRAY | NUMBER | INTEGER | STRING;
const TYPE_NAMES: [(&str, u8); 7] = [
    ("null", NULL),
    ("boolean", BOOLEAN),
    ("object", OBJECT),
    ("array", ARRAY),
    ("number", NUMBER),
    ("integer", INTEGER),
    ("string", STRING),
];

/// `$ref` and `allOf` of this node were taken apart already.
const HIDE_CONJUNCTION: u8 = 1;
/// `oneOf` and `anyOf` of this node were taken apart already.
const HIDE_ALTERNATIVES: u8 = 1 << 1;

/// The schema an absent subschema stands for.
static ANYTHING: Value = Value::Bool(true);

/// Who reads and who writes, and which of them is the new version: this
/// decides the words ("added" or "removed") and which document paths point
/// into.
#[derive(Debug, Clone, Copy)]
struct Roles {
    reader_is_new: bool,
    new: &'static str,
    old: &'static str,
}

impl Roles {
    const STANDALONE: Roles = Roles {
        reader_is_new: true,
        new: "reader schema",
        old: "writer schema",
    };
    const BACKWARD: Roles = Roles {
        reader_is_new: true,
        new: "new schema",
        old: "old schema",
    };
    const FORWARD: Roles = Roles {
        reader_is_new: false,
        new: "new schema",
        old: "old schema",
    };

    fn reader(self) -> &'static str {
        if self.reader_is_new {
            self.new
        } else {
            self.old
        }
    }

    fn writer(self) -> &'static str {
        if self.reader_is_new {
            self.old
        } else {
            self.new
        }
    }

    /// `when_reader_new` words a difference as a change from writer to
    /// reader; `when_reader_old` words the same difference when the reader
    /// is the old version (the change then goes from reader to writer).
    fn change<T>(self, when_reader_new: T, when_reader_old: T) -> T {
        if self.reader_is_new {
            when_reader_new
        } else {
            when_reader_old
        }
    }
}

/// Which document holds the thing a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Both do (a keyword whose value changed): point into the new one.
    Both,
    Reader,
    Writer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Finding {
    reader_ptr: String,
    writer_ptr: String,
    at: At,
    message: String,
    /// For a finding that sums up others (no branch fits, a property left
    /// to `additionalProperties`): the innermost reason it quotes, so that
    /// summaries of summaries quote the reason and not each other.
    cause: Option<String>,
}

impl Finding {
    /// About `tokens` under the nodes `w` and `r`.
    fn under(w: &Node<'_>, r: &Node<'_>, tokens: &[&str], at: At, message: String) -> Finding {
        Finding {
            reader_ptr: pointer(&r.ptr, tokens),
            writer_ptr: pointer(&w.ptr, tokens),
            at,
            message,
            cause: None,
        }
    }

    /// The reason to quote when summing this finding up.
    fn reason(&self) -> String {
        self.cause.clone().unwrap_or_else(|| self.message.clone())
    }

    fn render(self, roles: Roles) -> Incompatibility {
        let (ptr, in_old) = match self.at {
            At::Both if roles.reader_is_new => (self.reader_ptr, false),
            At::Both => (self.writer_ptr, false),
            At::Reader => (self.reader_ptr, !roles.reader_is_new),
            At::Writer => (self.writer_ptr, roles.reader_is_new),
        };
        let path = if ptr.is_empty() { "#".to_owned() } else { ptr };
        let message = if in_old {
            format!("{} (path in the {})", self.message, roles.old)
        } else {
            self.message
        };
        Incompatibility {
            path,
            message,
            against: None,
        }
    }
}

/// A schema inside its document, at a JSON pointer.
#[derive(Debug, Clone)]
struct Node<'a> {
    doc: &'a Value,
    value: &'a Value,
    ptr: String,
    hide: u8,
}

impl<'a> Node<'a> {
    fn root(doc: &'a Value) -> Self {
        Node {
            doc,
            value: doc,
            ptr: String::new(),
            hide: 0,
        }
    }

    /// `value`, found at `tokens` below this node.
    fn at(&self, value: &'a Value, tokens: &[&str]) -> Node<'a> {
        Node {
            doc: self.doc,
            value,
            ptr: pointer(&self.ptr, tokens),
            hide: 0,
        }
    }

    /// The subschema under `key`; `true` (anything) when absent.
    fn sub(&self, key: &str) -> Node<'a> {
        self.at(self.get(key).unwrap_or(&ANYTHING), &[key])
    }

    fn hiding(&self, bits: u8) -> Node<'a> {
        Node {
            hide: self.hide | bits,
            ..self.clone()
        }
    }

    fn hidden(&self, key: &str) -> bool {
        (self.hide & HIDE_CONJUNCTION != 0 && matches!(key, "$ref" | "allOf"))
            || (self.hide & HIDE_ALTERNATIVES != 0 && matches!(key, "oneOf" | "anyOf"))
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        if self.hidden(key) {
            return None;
        }
        self.value.as_object()?.get(key)
    }

    fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn keys(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.value
            .as_object()
            .into_iter()
            .flat_map(|m| m.keys())
            .map(String::as_str)
            .filter(|k| !self.hidden(k))
    }

    fn number(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(Value::as_f64)
    }

    fn count(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(count_of)
    }

    fn array(&self, key: &str) -> Option<&'a Vec<Value>> {
        self.get(key).and_then(Value::as_array)
    }

    fn str(&self, key: &str) -> Option<&'a str> {
        self.get(key).and_then(Value::as_str)
    }

    fn is_false(&self) -> bool {
        matches!(self.value, Value::Bool(false))
    }

    /// `true`, or an object with nothing but annotations.
    fn accepts_anything(&self) -> bool {
        match self.value {
            Value::Bool(b) => *b,
            Value::Object(_) => self.keys().all(|k| ANNOTATIONS.contains(&k)),
            _ => false,
        }
    }

    fn has_conjunction(&self) -> bool {
        self.str("$ref").is_some() || self.array("allOf").is_some()
    }

    fn has_alternatives(&self) -> bool {
        self.array("oneOf").is_some() || self.array("anyOf").is_some()
    }

    /// The branches of `oneOf` (or else `anyOf`), with the keyword.
    fn alternatives(&self) -> Option<(&'static str, Vec<Node<'a>>)> {
        ["oneOf", "anyOf"].into_iter().find_map(|keyword| {
            let branches = self.array(keyword)?;
            Some((keyword, self.branches(keyword, branches)))
        })
    }

    fn branches(&self, keyword: &str, values: &'a [Value]) -> Vec<Node<'a>> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| self.at(v, &[keyword, &i.to_string()]))
            .collect()
    }

    /// The parts all of which hold: the node without `$ref` and `allOf`,
    /// the `$ref` target, each `allOf` part.
    fn conjuncts(&self) -> Vec<Part<'a>> {
        let mut parts = vec![Part::Schema(self.hiding(HIDE_CONJUNCTION))];
        if let Some(reference) = self.str("$ref") {
            parts.push(match resolve(self.doc, reference) {
                Some((value, ptr)) => Part::Schema(Node {
                    doc: self.doc,
                    value,
                    ptr,
                    hide: 0,
                }),
                None => Part::Unresolved(reference),
            });
        }
        if let Some(all) = self.array("allOf") {
            parts.extend(self.branches("allOf", all).into_iter().map(Part::Schema));
        }
        parts
    }
}

/// One conjunct of a schema.
enum Part<'a> {
    Schema(Node<'a>),
    /// A `$ref` that does not point into the same document.
    Unresolved(&'a str),
}

/// A (writer, reader) pair of locations, with what each has hidden.
type PairKey = (String, u8, String, u8);

/// The state of comparing one pair of documents.
struct Comparison {
    roles: Roles,
    /// Pairs being compared further up, with their depth.
    in_progress: HashMap<PairKey, usize>,
    /// Pairs compared, with what they found: without this, alternatives
    /// inside alternatives compare the same pairs exponentially often.
    done: HashMap<PairKey, Vec<Finding>>,
    /// The lowest depth of an in-progress pair assumed to hold since the
    /// current pair started: a result that leans on a pair still open
    /// above it is not final and is not kept in `done`.
    lowest_assumed: usize,
    depth: usize,
    steps: usize,
}

impl Comparison {
    /// Adds to `out` what `r` rejects that `w` allows.
    fn compare(&mut self, w: &Node<'_>, r: &Node<'_>, out: &mut Vec<Finding>) {
        if w.is_false() || r.accepts_anything() {
            return;
        }
        if !is_schema(w.value) || !is_schema(r.value) {
            if !json_eq(w.value, r.value) {
                let at = if is_schema(r.value) {
                    At::Writer
                } else {
                    At::Reader
                };
                out.push(Finding::under(
                    w,
                    r,
                    &[],
                    at,
                    "not a schema (expected an object or a boolean); not judged compatible".into(),
                ));
            }
            return;
        }
        let roles = self.roles;
        if r.is_false() {
            let message = roles.change(
                format!(
                    "schema changed to `false`: the {} rejects every value",
                    roles.reader()
                ),
                format!(
                    "`false` replaced by a schema: the {} rejects every value",
                    roles.reader()
                ),
            );
            out.push(Finding::under(w, r, &[], At::Reader, message));
            return;
        }
        let key = (w.ptr.clone(), w.hide, r.ptr.clone(), r.hide);
        if let Some(found) = self.done.get(&key) {
            out.extend(found.iter().cloned());
            return;
        }
        // Meeting a pair again on the way down means a recursive schema
        // came round: assume it holds there, and let the first visit decide.
        if let Some(&depth) = self.in_progress.get(&key) {
            self.lowest_assumed = self.lowest_assumed.min(depth);
            return;
        }
        self.steps += 1;
        if self.depth >= MAX_DEPTH || self.steps > MAX_STEPS {
            out.push(Finding::under(
                w,
                r,
                &[],
                At::Reader,
                format!(
                    "schema too deep or too branched to compare (limits: {MAX_DEPTH} levels, \
                     {MAX_STEPS} steps); not judged compatible"
                ),
            ));
            return;
        }
        let depth = self.depth;
        self.in_progress.insert(key.clone(), depth);
        let outer_assumed = std::mem::replace(&mut self.lowest_assumed, usize::MAX);
        self.depth += 1;
        let mut found = Vec::new();
        if r.has_conjunction() {
            self.reader_conjunction(w, r, &mut found);
        } else if w.has_conjunction() {
            self.writer_conjunction(w, r, &mut found);
        } else if r.has_alternatives() || w.has_alternatives() {
            self.compare_alternatives(w, r, &mut found);
        } else {
            self.compare_keywords(w, r, &mut found);
        }
        self.depth -= 1;
        self.in_progress.remove(&key);
        let assumed = self.lowest_assumed;
        self.lowest_assumed = outer_assumed.min(assumed);
        // A break found under assumptions is still a break; a pass is final
        // only if it leaned on nothing open above this pair.
        if !found.is_empty() || assumed >= depth {
            self.done.insert(key, found.clone());
        }
        out.extend(found);
    }

    /// What `compare` would add, without adding it.
    fn attempt(&mut self, w: &Node<'_>, r: &Node<'_>) -> Vec<Finding> {
        let mut found = Vec::new();
        self.compare(w, r, &mut found);
        found
    }

    /// Every part of the reader must accept the writer.
    fn reader_conjunction(&mut self, w: &Node<'_>, r: &Node<'_>, out: &mut Vec<Finding>) {
        for part in r.conjuncts() {
            match part {
                Part::Schema(x) => self.compare(w, &x, out),
                Part::Unresolved(reference) => {
                    if w.str("$ref") != Some(reference) {
                        out.push(Finding::under(
                            w,
                            r,
                            &["$ref"],
                            At::Reader,
                            format!(
                                "`$ref` `{reference}` cannot be resolved (only references into \
                                 the same document, `#/...`, are); not judged compatible"
                            ),
                        ));
                    }
                }
            }
        }
    }

    /// The writer fits if one of its parts does; otherwise report the part
    /// that came closest.
    fn writer_conjunction(&mut self, w: &Node<'_>, r: &Node<'_>, out: &mut Vec<Finding>) {
        let candidates: Vec<Node<'_>> = w
            .conjuncts()
            .into_iter()
            .filter_map(|part| match part {
                Part::Schema(x) if !x.accepts_anything() => Some(x),
                // An unresolved reference tells nothing about the writer.
                _ => None,
            })
            .collect();
        if candidates.is_empty() {
            self.compare(&w.hiding(HIDE_CONJUNCTION), r, out);
            return;
        }
        let mut closest: Option<Vec<Finding>> = None;
        for candidate in &candidates {
            let found = self.attempt(candidate, r);
            if found.is_empty() {
                return;
            }
            if closest.as_ref().is_none_or(|c| found.len() < c.len()) {
                closest = Some(found);
            }
        }
        out.extend(closest.unwrap_or_default());
    }

    fn compare_alternatives(&mut self, w: &Node<'_>, r: &Node<'_>, out: &mut Vec<Finding>) {
        let roles = self.roles;
        if !r.has_alternatives() {
            // The writer is its other keywords and one of its branches: it
            // fits if those keywords do, or if every branch does.
            let rest = self.attempt(&w.hiding(HIDE_ALTERNATIVES), r);
            if rest.is_empty() {
                return;
            }
            let mut branches = Vec::new();
            if let Some((_, nodes)) = w.alternatives() {
                for branch in &nodes {
                    branches.extend(self.attempt(branch, r));
                }
            }
            if branches.is_empty() {
                return;
            }
            out.extend(if branches.len() <= rest.len() {
                branches
            } else {
                rest
            });
            return;
        }

        self.compare(w, &r.hiding(HIDE_ALTERNATIVES), out);
        let writer_rest = w.hiding(HIDE_ALTERNATIVES);
        let writer_branches = w.alternatives();
        for keyword in ["oneOf", "anyOf"] {
            let Some(values) = r.array(keyword) else {
                continue;
            };
            if keyword == "oneOf" && !w.has("oneOf") && w.has("anyOf") {
                out.push(Finding::under(
                    w,
                    r,
                    &["oneOf"],
                    At::Reader,
                    format!(
                        "{}: the {} rejects values that match more than one branch",
                        roles.change("`anyOf` changed to `oneOf`", "`oneOf` changed to `anyOf`"),
                        roles.reader()
                    ),
                ));
            }
            let reader_branches = r.branches(keyword, values);
            match &writer_branches {
                Some((writer_keyword, branches)) => {
                    for (i, branch) in branches.iter().enumerate() {
                        if let Some(detail) =
                            self.unfit(branch, Some(&writer_rest), &reader_branches)
                        {
                            let verb = roles.change("removed or narrowed", "added or widened");
                            out.push(Finding {
                                reader_ptr: pointer(&r.ptr, &[keyword]),
                                writer_ptr: branch.ptr.clone(),
                                at: At::Writer,
                                message: format!(
                                    "`{writer_keyword}` branch {i} {verb}: no branch of the {}'s \
                                     `{keyword}` accepts it ({detail})",
                                    roles.reader()
                                ),
                                cause: Some(detail),
                            });
                        }
                    }
                }
                None => {
                    if let Some(detail) = self.unfit(w, None, &reader_branches) {
                        let mut finding = Finding::under(
                            w,
                            r,
                            &[keyword],
                            At::Reader,
                            format!(
                                "{}: no branch of the {} accepts everything the {} allows \
                                 ({detail})",
                                roles.change(
                                    format!("`{keyword}` added or narrowed"),
                                    format!("`{keyword}` removed or widened"),
                                ),
                                roles.reader(),
                                roles.writer()
                            ),
                        );
                        finding.cause = Some(detail);
                        out.push(finding);
                    }
                }
            }
        }
    }

    /// `None` if some reader branch accepts `branch` (with the writer's
    /// other keywords `rest`, when given); else what the closest one rejects.
    fn unfit(
        &mut self,
        branch: &Node<'_>,
        rest: Option<&Node<'_>>,
        reader_branches: &[Node<'_>],
    ) -> Option<String> {
        let mut closest: Option<Vec<Finding>> = None;
        for rb in reader_branches {
            let found = self.attempt(branch, rb);
            if found.is_empty() {
                return None;
            }
            if let Some(rest) = rest
                && self.attempt(rest, rb).is_empty()
            {
                return None;
            }
            if closest.as_ref().is_none_or(|c| found.len() < c.len()) {
                closest = Some(found);
            }
        }
        Some(match closest.as_deref() {
            Some([first, ..]) => first.reason(),
            _ => "it has no branches".to_owned(),
        })
    }

    /// Neither side has `$ref`, `allOf`, `oneOf` or `anyOf` left.
    fn compare_keywords(&mut self, w: &Node<'_>, r: &Node<'_>, out: &mut Vec<Finding>) {
        let types = writer_types(w);
        if types == 0 {
            // The writer's type and values contradict: it allows nothing.
            return;
        }
        self.compare_types(w, r, types, out);
        self.compare_values(w, r, out);
        if types & (NUMBER | INTEGER) != 0 {
            self.compare_numbers(w, r, types, out);
        }
        if types & STRING != 0 {
            self.at_least(w, r, "minLength", out);
            self.at_most(w, r, "maxLength", out);
            self.same_text(w, r, "pattern", out);
            self.same_text(w, r, "format", out);
        }
        if types & ARRAY != 0 {
            self.compare_arrays(w, r, out);
        }
        if types & OBJECT != 0 {
            self.compare_objects(w, r, out);
        }
        self.compare_unjudged(w, r, out);
    }

    fn compare_types(&mut self, w: &Node<'_>, r: &Node<'_>, types: u8, out: &mut Vec<Finding>) {
        let Some(reader) = declared_types(r) else {
            return;
        };
        let missing = types & !widen(reader);
        if missing == 0 {
            return;
        }
        let roles = self.roles;
        let writer_text = w.get("type").map(type_text).unwrap_or_default();
        let reader_text = r.get("type").map(type_text).unwrap_or_default();
        let (from, to) = roles.change((&writer_text, &reader_text), (&reader_text, &writer_text));
        let change = match declared_types(w) {
            None => roles.change(
                format!("type {reader_text} added"),
                format!("type {reader_text} removed"),
            ),
            Some(declared) if widen(reader) & !widen(declared) == 0 => {
                format!(
                    "type {} from {from} to {to}",
                    roles.change("narrowed", "widened")
                )
            }
            Some(_) => format!("type changed from {from} to {to}"),
        };
        let at = if w.has("type") { At::Both } else { At::Reader };
        out.push(Finding::under(
            w,
            r,
            &["type"],
            at,
            format!(
                "{change}: the {} rejects {}",
                roles.reader(),
                describe_types(missing, reader)
            ),
        ));
    }

    /// `enum` and `const`: the reader must accept every value the writer can.
    fn compare_values(&mut self, w: &Node<'_>, r: &Node<'_>, out: &mut Vec<Finding>) {
        let reader_const = r.get("const");
        let reader_enum = r.array("enum");
        if reader_const.is_none() && reader_enum.is_none() {
            return;
        }
        let roles = self.roles;
        let keyword = if reader_const.is_some() {
            "const"
        } else {
            "enum"
        };
        // Where the writer lists its values too, point at its list in the
        // new schema whichever side that is.
        let writer_keyword = ["const", "enum"].into_iter().find(|k| w.has(k));
        let accepts = |v: &Value| {
            reader_enum.is_none_or(|e| e.iter().any(|x| json_eq(x, v)))
                && reader_const.is_none_or(|c| json_eq(c, v))
        };
        let message = match finite_values(w) {
            None => {
                let allowed = match reader_const {
                    Some(c) => code(c),
                    None => list(reader_enum.into_iter().flatten()),
                };
                roles.change(
                    format!(
                        "`{keyword}` added: the {} accepts only {allowed}",
                        roles.reader()
                    ),
                    format!(
                        "`{keyword}` removed: the {} accepts only {allowed}",
                        roles.reader()
                    ),
                )
            }
            Some(values) => {
                let missing: Vec<&Value> = values.into_iter().filter(|&v| !accepts(v)).collect();
                if missing.is_empty() {
                    return;
                }
                let missing = list(missing);
                match (w.get("const"), reader_const) {
                    (Some(wc), Some(rc)) => {
                        let (from, to) = roles.change((wc, rc), (rc, wc));
                        format!(
                            "`const` changed from {} to {}: the {} rejects {}",
                            code(from),
                            code(to),
                            roles.reader(),
                            missing
                        )
                    }
                    _ => roles.change(
                        format!("`{keyword}` no longer accepts {missing}"),
                        format!(
                            "{missing} now allowed, which the {}'s `{keyword}` rejects",
                            roles.reader()
                        ),
                    ),
                }
            }
        };
        out.push(Finding {
            reader_ptr: pointer(&r.ptr, &[keyword]),
            writer_ptr: pointer(&w.ptr, &[writer_keyword.unwrap_or(keyword)]),
            at: if writer_keyword.is_some() {
                At::Both
            } else {
                At::Reader
            },
            message,
            cause: None,
        });
    }

    fn compare_numbers(&mut self, w: &Node<'_>, r: &Node<'_>, types: u8, out: &mut Vec<Finding>) {
        for (label, inclusive, exclusive, lower) in [
            ("lower bound", "minimum", "exclusiveMinimum", true),
            ("upper bound", "maximum", "exclusiveMaximum", false),
        ] {
            let Some(rb) = bound(r, inclusive, exclusive, lower) else {
                continue;
            };
            let wb = bound(w, inclusive, exclusive, lower);
            if wb.as_ref().is_some_and(|wb| !stricter(&rb, wb, lower)) {
                continue;
            }
            let at = if w.has(rb.keyword) {
                At::Both
            } else {
                At::Reader
            };
            let message = self.shift(label, "tightened", wb.map(|b| b.text), rb.text);
            out.push(Finding::under(w, r, &[rb.keyword], at, message));
        }
        if let Some(rm) = r.number("multipleOf").filter(|m| *m > 0.0) {
            let wm = w.number("multipleOf");
            let fits = match wm {
                Some(wm) => is_multiple(wm, rm),
                None => types & !INTEGER == 0 && is_multiple(1.0, rm),
            };
            if !fits {
                let at = if wm.is_some() { At::Both } else { At::Reader };
                let message = self.shift(
                    "`multipleOf`",
                    "tightened",
                    w.get("multipleOf").map(Value::to_string),
                    r.get("multipleOf")
                        .map(Value::to_string)
                        .unwrap_or_default(),
                );
                out.push(Finding::under(w, r, &["multipleOf"], at, message));
            }
        }
    }

    fn compare_arrays(&mut self, w: &Node<'_>, r: &Node<'_>, out: &mut Vec<Finding>) {
        let roles = self.roles;
        self.at_least(w, r, "minItems", out);
        self.at_most(w, r, "maxItems", out);
        let unique = Value::Bool(true);
        if r.get("uniqueItems") == Some(&unique) && w.get("uniqueItems") != Some(&unique) {
            let at = if w.has("uniqueItems") {
                At::Both
            } else {
                At::Reader
            };
            out.push(Finding::under(
                w,
                r,
                &["uniqueItems"],
                at,
                format!(
                    "`uniqueItems` {}: the {} rejects arrays with repeated items",
                    roles.change("added", "removed"),
                    roles.reader()
                ),
            ));
        }
        let (w_prefix, w_rest) = item_schemas(w);
        let (r_prefix, r_rest) = item_schemas(r);
        for i in 0..w_prefix.len().max(r_prefix.len()) {
            let wi = w_prefix.get(i).unwrap_or(&w_rest);
            let ri = r_prefix.get(i).unwrap_or(&r_rest);
            self.compare(wi, ri, out);
        }
        self.compare(&w_rest, &r_rest, out);
    }

    fn compare_objects(&mut self, w: &Node<'_>, r: &Node<'_>, out: &mut Vec<Finding>) {
        let roles = self.roles;
        let w_props = w.get("properties").and_then(Value::as_object);
        let r_props = r.get("properties").and_then(Value::as_object);
        let w_extra = w.sub("additionalProperties");
        let r_extra = r.sub("additionalProperties");
        let names: BTreeSet<&str> = w_props
            .into_iter()
            .chain(r_props)
            .flat_map(|m| m.keys())
            .map(String::as_str)
            .collect();
        for name in names {
            let tokens = ["properties", name];
            match (
                w_props.and_then(|p| p.get(name)),
                r_props.and_then(|p| p.get(name)),
            ) {
                (Some(wp), Some(rp)) => self.compare(&w.at(wp, &tokens), &r.at(rp, &tokens), out),
                (None, Some(rp)) => self.only_in_reader(name, &w_extra, &r.at(rp, &tokens), out),
                (Some(wp), None) => self.only_in_writer(name, &w.at(wp, &tokens), &r_extra, out),
                (None, None) => {}
            }
        }

        if r_extra.is_false() {
            if !w_extra.is_false() {
                let message = roles.change(
                    format!(
                        "content model closed: `additionalProperties: false` rejects properties \
                         the {} allows",
                        roles.writer()
                    ),
                    format!(
                        "content model opened: the {} has `additionalProperties: false` and \
                         rejects properties the {} allows",
                        roles.reader(),
                        roles.writer()
                    ),
                );
                out.push(Finding::under(
                    w,
                    r,
                    &["additionalProperties"],
                    At::Reader,
                    message,
                ));
            }
        } else {
            self.compare(&w_extra, &r_extra, out);
        }

        if let Some(required) = r.array("required") {
            let w_required: HashSet<&str> = w
                .array("required")
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let at = if w.has("required") {
                At::Both
            } else {
                At::Reader
            };
            for name in required.iter().filter_map(Value::as_str) {
                if w_required.contains(name)
                    || r_props
                        .and_then(|p| p.get(name))
                        .is_some_and(|p| has_default(r.doc, p))
                {
                    continue;
                }
                let message = roles.change(
                    format!(
                        "required property `{name}` added without a default: the {} does not \
                         require it",
                        roles.writer()
                    ),
                    format!(
                        "property `{name}` no longer required: the {} requires it and has no \
                         default",
                        roles.reader()
                    ),
                );
                out.push(Finding::under(w, r, &["required"], at, message));
            }
        }
        self.at_least(w, r, "minProperties", out);
        self.at_most(w, r, "maxProperties", out);
    }

    /// A property the reader describes and the writer leaves to its
    /// `additionalProperties`.
    fn only_in_reader(
        &mut self,
        name: &str,
        w_extra: &Node<'_>,
        rp: &Node<'_>,
        out: &mut Vec<Finding>,
    ) {
        if w_extra.is_false() {
            // A closed writer never sends it; `required` decides the rest.
            return;
        }
        let found = self.attempt(w_extra, rp);
        let Some(first) = found.first() else {
            return;
        };
        let roles = self.roles;
        let reason = first.reason();
        let (message, cause) = if w_extra.accepts_anything() {
            let message = format!(
                "property `{name}` {}: the {} allows `{name}` with any value, the {} restricts it",
                roles.change(
                    "added to an open content model",
                    "removed from an open content model"
                ),
                roles.writer(),
                roles.reader()
            );
            (message, None)
        } else {
            let message = format!(
                "property `{name}` {}: the {}'s `additionalProperties` allows `{name}` with \
                 values the {} rejects ({reason})",
                roles.change("added", "removed"),
                roles.writer(),
                roles.reader(),
            );
            (message, Some(reason))
        };
        out.push(Finding {
            reader_ptr: rp.ptr.clone(),
            writer_ptr: w_extra.ptr.clone(),
            at: At::Reader,
            message,
            cause,
        });
    }

    /// A property the writer describes and the reader leaves to its
    /// `additionalProperties`.
    fn only_in_writer(
        &mut self,
        name: &str,
        wp: &Node<'_>,
        r_extra: &Node<'_>,
        out: &mut Vec<Finding>,
    ) {
        if r_extra.accepts_anything() || wp.is_false() {
            return;
        }
        let roles = self.roles;
        let (message, cause) = if r_extra.is_false() {
            let message = format!(
                "property `{name}` {}: the {} rejects it",
                roles.change(
                    "removed from a closed content model",
                    "added to a closed content model"
                ),
                roles.reader()
            );
            (message, None)
        } else {
            let found = self.attempt(wp, r_extra);
            let Some(first) = found.first() else {
                return;
            };
            let reason = first.reason();
            let message = format!(
                "property `{name}` {}: the {}'s `additionalProperties` rejects some of its values \
                 ({reason})",
                roles.change("removed", "added"),
                roles.reader(),
            );
            (message, Some(reason))
        };
        out.push(Finding {
            reader_ptr: r_extra.ptr.clone(),
            writer_ptr: wp.ptr.clone(),
            at: At::Writer,
            message,
            cause,
        });
    }

    /// Keywords no rule judges (or judged ones too malformed to read): any
    /// difference is a break.
    fn compare_unjudged<'a>(&mut self, w: &Node<'a>, r: &Node<'a>, out: &mut Vec<Finding>) {
        let keys: BTreeSet<&str> = w.keys().chain(r.keys()).collect();
        for key in keys {
            if ANNOTATIONS.contains(&key) {
                continue;
            }
            let (wv, rv) = (w.get(key), r.get(key));
            let judged = JUDGED.contains(&key)
                && wv.is_none_or(|v| well_formed(key, v))
                && rv.is_none_or(|v| well_formed(key, v));
            if judged {
                continue;
            }
            let at = match (wv, rv) {
                (Some(a), Some(b)) if json_eq(a, b) => continue,
                (None, None) => continue,
                (Some(_), Some(_)) => At::Both,
                (None, Some(_)) => At::Reader,
                (Some(_), None) => At::Writer,
            };
            out.push(Finding::under(
                w,
                r,
                &[key],
                at,
                format!("changed `{key}`; not judged compatible"),
            ));
        }
    }

    /// A lower limit on a size (`minLength`, ...): the reader's must not
    /// exceed the writer's.
    fn at_least(&mut self, w: &Node<'_>, r: &Node<'_>, keyword: &str, out: &mut Vec<Finding>) {
        let Some(rv) = r.count(keyword) else {
            return;
        };
        let wv = w.count(keyword);
        if rv <= wv.unwrap_or(0) {
            return;
        }
        let at = if wv.is_some() { At::Both } else { At::Reader };
        let message = self.shift(
            &format!("`{keyword}`"),
            "tightened",
            wv.map(|v| v.to_string()),
            rv.to_string(),
        );
        out.push(Finding::under(w, r, &[keyword], at, message));
    }

    /// An upper limit on a size (`maxLength`, ...): the reader's must not be
    /// below the writer's.
    fn at_most(&mut self, w: &Node<'_>, r: &Node<'_>, keyword: &str, out: &mut Vec<Finding>) {
        let Some(rv) = r.count(keyword) else {
            return;
        };
        let wv = w.count(keyword);
        if wv.is_some_and(|wv| wv <= rv) {
            return;
        }
        let at = if wv.is_some() { At::Both } else { At::Reader };
        let message = self.shift(
            &format!("`{keyword}`"),
            "tightened",
            wv.map(|v| v.to_string()),
            rv.to_string(),
        );
        out.push(Finding::under(w, r, &[keyword], at, message));
    }

    /// `pattern`, `format`: a reader's must be the writer's exactly.
    fn same_text(&mut self, w: &Node<'_>, r: &Node<'_>, keyword: &str, out: &mut Vec<Finding>) {
        let Some(rv) = r.str(keyword) else {
            return;
        };
        let wv = w.str(keyword);
        if wv == Some(rv) {
            return;
        }
        let at = if wv.is_some() { At::Both } else { At::Reader };
        let message = self.shift(
            &format!("`{keyword}`"),
            "changed",
            wv.map(|v| format!("`{v}`")),
            format!("`{rv}`"),
        );
        out.push(Finding::under(w, r, &[keyword], at, message));
    }

    /// Words a constraint the reader has and the writer lacks or has
    /// looser (`writer` is `None` when it lacks it), as a change from the
    /// old version to the new one.
    fn shift(&self, what: &str, verb: &str, writer: Option<String>, reader: String) -> String {
        let opposite = if verb == "tightened" {
            "loosened"
        } else {
            verb
        };
        match (self.roles.reader_is_new, writer) {
            (true, None) => format!("{what} {reader} added"),
            (true, Some(w)) => format!("{what} {verb} from {w} to {reader}"),
            (false, None) => format!("{what} {reader} removed"),
            (false, Some(w)) => format!("{what} {opposite} from {reader} to {w}"),
        }
    }
}

/// A numeric bound of a schema, the stricter of its two keywords.
struct Bound {
    value: f64,
    exclusive: bool,
    keyword: &'static str,
    text: String,
}

fn bound(
    n: &Node<'_>,
    inclusive: &'static str,
    exclusive: &'static str,
    lower: bool,
) -> Option<Bound> {
    // Draft 4 wrote an exclusive bound as `minimum` plus `exclusiveMinimum: true`.
    let draft4 = n.get(exclusive) == Some(&Value::Bool(true));
    let mut best = n.number(inclusive).map(|value| Bound {
        value,
        exclusive: draft4,
        keyword: inclusive,
        text: format!(
            "`{inclusive}: {}`{}",
            n.get(inclusive).map(Value::to_string).unwrap_or_default(),
            if draft4 { " (exclusive)" } else { "" }
        ),
    });
    if let Some(value) = n
        .get(exclusive)
        .filter(|v| v.is_number())
        .and_then(Value::as_f64)
    {
        let candidate = Bound {
            value,
            exclusive: true,
            keyword: exclusive,
            text: format!(
                "`{exclusive}: {}`",
                n.get(exclusive).map(Value::to_string).unwrap_or_default()
            ),
        };
        if best.as_ref().is_none_or(|b| stricter(&candidate, b, lower)) {
            best = Some(candidate);
        }
    }
    best
}

/// Whether `a` rejects some value `b` accepts.
fn stricter(a: &Bound, b: &Bound, lower: bool) -> bool {
    let beyond = if lower {
        a.value > b.value
    } else {
        a.value < b.value
    };
    beyond || (a.value == b.value && a.exclusive && !b.exclusive)
}

fn is_multiple(value: f64, of: f64) -> bool {
    let q = value / of;
    (q - q.round()).abs() <= 1e-9 * q.abs().max(1.0)
}

/// Positional item schemas and the schema for the items after them.
fn item_schemas<'a>(n: &Node<'a>) -> (Vec<Node<'a>>, Node<'a>) {
    if let Some(prefix) = n.array("prefixItems") {
        (n.branches("prefixItems", prefix), n.sub("items"))
    } else if let Some(tuple) = n.array("items") {
        (n.branches("items", tuple), n.sub("additionalItems"))
    } else {
        (Vec::new(), n.sub("items"))
    }
}

fn declared_types(n: &Node<'_>) -> Option<u8> {
    match n.get("type")? {
        Value::String(name) => Some(type_bit(name)),
        Value::Array(names) => Some(
            names
                .iter()
                .filter_map(Value::as_str)
                .fold(0, |acc, name| acc | type_bit(name)),
        ),
        _ => None,
    }
}

fn type_bit(name: &str) -> u8 {
    TYPE_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, bit)| *bit)
}

/// A type set with `integer` added wherever `number` is.
fn widen(types: u8) -> u8 {
    if types & NUMBER != 0 {
        types | INTEGER
    } else {
        types
    }
}

/// The types of the values a writer can produce: its `type`, narrowed by its
/// `enum` or `const`.
fn writer_types(w: &Node<'_>) -> u8 {
    let declared = widen(declared_types(w).unwrap_or(ANY_TYPE));
    match finite_values(w) {
        Some(values) => values.into_iter().fold(0, |acc, v| acc | value_type(v)) & declared,
        None => declared,
    }
}

fn value_type(v: &Value) -> u8 {
    match v {
        Value::Null => NULL,
        Value::Bool(_) => BOOLEAN,
        Value::Object(_) => OBJECT,
        Value::Array(_) => ARRAY,
        Value::String(_) => STRING,
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0) {
                INTEGER
            } else {
                NUMBER
            }
        }
    }
}

/// The values a schema allows when its `enum` or `const` lists them.
fn finite_values<'a>(n: &Node<'a>) -> Option<Vec<&'a Value>> {
    match (n.get("const"), n.array("enum")) {
        (Some(c), Some(e)) => Some(if e.iter().any(|x| json_eq(x, c)) {
            vec![c]
        } else {
            vec![]
        }),
        (Some(c), None) => Some(vec![c]),
        (None, Some(e)) => Some(e.iter().collect()),
        (None, None) => None,
    }
}

fn describe_types(missing: u8, reader: u8) -> String {
    let mut parts = Vec::new();
    let mut named = missing;
    if missing & NUMBER != 0 {
        // Every integer is a number: name `number` alone.
        named &= !INTEGER;
        if reader & INTEGER != 0 {
            parts.push("non-integer numbers".to_owned());
            named &= !NUMBER;
        }
    }
    let names: Vec<String> = TYPE_NAMES
        .iter()
        .filter(|(_, bit)| named & bit != 0)
        .map(|(name, _)| format!("`{name}`"))
        .collect();
    if !names.is_empty() {
        parts.push(format!("values of type {}", names.join(", ")));
    }
    parts.join(" and ")
}

fn type_text(v: &Value) -> String {
    match v {
        Value::String(s) => format!("`{s}`"),
        Value::Array(items) => {
            let names: Vec<String> = items
                .iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                .collect();
            format!("`[{}]`", names.join(", "))
        }
        other => code(other),
    }
}

/// Whether the property schema `p` (or what its `$ref`s lead to) has a
/// `default`.
fn has_default(doc: &Value, p: &Value) -> bool {
    let mut current = p;
    // A few hops are plenty; a longer chain is probably a loop.
    for _ in 0..16 {
        let Some(object) = current.as_object() else {
            return false;
        };
        if object.contains_key("default") {
            return true;
        }
        match object
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| resolve(doc, r))
        {
            Some((target, _)) => current = target,
            None => return false,
        }
    }
    false
}

/// The target of a local `$ref` (`#`, `#/$defs/...`) and its JSON pointer;
/// `None` for anything else.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<(&'a Value, String)> {
    let fragment = reference.strip_prefix('#')?;
    let ptr = percent_decode(fragment)?;
    if !ptr.is_empty() && !ptr.starts_with('/') {
        // A plain-name fragment (`#thing`) names an `$anchor`: not followed.
        return None;
    }
    doc.pointer(&ptr).map(|v| (v, ptr))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `base` with `tokens` appended, escaped as RFC 6901 says.
fn pointer(base: &str, tokens: &[&str]) -> String {
    let mut out = base.to_owned();
    for token in tokens {
        out.push('/');
        out.push_str(&token.replace('~', "~0").replace('/', "~1"));
    }
    out
}

fn is_schema(v: &Value) -> bool {
    v.is_object() || v.is_boolean()
}

fn count_of(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f <= u64::MAX as f64)
            .map(|f| f as u64)
    })
}

fn well_formed(keyword: &str, v: &Value) -> bool {
    match keyword {
        "type" => v.is_string() || v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        "enum" | "prefixItems" => v.is_array(),
        "allOf" | "oneOf" | "anyOf" => v.as_array().is_some_and(|a| !a.is_empty()),
        "const" => true,
        "properties" => v.is_object(),
        "additionalProperties" | "additionalItems" => is_schema(v),
        "items" => is_schema(v) || v.is_array(),
        "required" => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        "minLength" | "maxLength" | "minItems" | "maxItems" | "minProperties" | "maxProperties" => {
            count_of(v).is_some()
        }
        "minimum" | "maximum" => v.is_number(),
        "exclusiveMinimum" | "exclusiveMaximum" => v.is_number() || v.is_boolean(),
        "multipleOf" => v.as_f64().is_some_and(|m| m > 0.0),
        "pattern" | "format" | "$ref" => v.is_string(),
        "uniqueItems" => v.is_boolean(),
        _ => false,
    }
}

/// JSON equality as JSON Schema means it: `1` equals `1.0`.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(i), Some(j)) => i == j,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|u| json_eq(v, u)))
        }
        _ => a == b,
    }
}

/// A value for a message: compact JSON in backticks, cut short if long.
fn code(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 60 {
        let cut: String = text.chars().take(57).collect();
        format!("`{cut}...`")
    } else {
        format!("`{text}`")
    }
}

/// Up to five values for a message.
fn list<'a>(values: impl IntoIterator<Item = &'a Value>) -> String {
    let values: Vec<&Value> = values.into_iter().collect();
    let mut shown: Vec<String> = values.iter().take(5).map(|v| code(v)).collect();
    if values.len() > 5 {
        shown.push(format!("and {} more", values.len() - 5));
    }
    shown.join(", ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn previous(versions: &[Value]) -> Vec<(String, Value)> {
        versions
            .iter()
            .enumerate()
            .map(|(i, v)| ((i + 1).to_string(), v.clone()))
            .collect()
    }

    fn tree(value: Value) -> Value {
        json!({
            "$defs": {
                "node": {
                    "type": "object",
                    "properties": {
                        "value": value,
                        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}
                    },
                    "additionalProperties": false
                }
            },
            "$ref": "#/$defs/node"
        })
    }

    #[test]
    fn recursive_definitions_compare_without_overflowing() {
        let v1 = tree(json!({"type": "integer"}));
        assert!(reader_rejects(&v1, &v1).is_empty());

        let v2 = tree(json!({"type": "integer", "minimum": 0}));
        let found = check(Mode::Backward, &v2, &previous(std::slice::from_ref(&v1)));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "/$defs/node/properties/value/minimum");
        assert!(check(Mode::Forward, &v2, &previous(&[v1])).is_empty());
    }

    #[test]
    fn reference_loops_without_progress_end() {
        let looped = json!({
            "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
            "$ref": "#/$defs/a"
        });
        let own = json!({"$ref": "#"});
        let text = json!({"type": "string"});
        for schema in [&looped, &own] {
            // Terminating is the point; a loop constrains nothing it can show.
            let _ = reader_rejects(schema, &text);
            let _ = reader_rejects(&text, schema);
            assert!(reader_rejects(schema, schema).is_empty());
        }
    }

    #[test]
    fn mutually_recursive_definitions_report_the_change_inside() {
        let schema = |person_name: Value| {
            json!({
                "$defs": {
                    "person": {
                        "type": "object",
                        "properties": {"name": person_name, "employer": {"$ref": "#/$defs/company"}}
                    },
                    "company": {
                        "type": "object",
                        "properties": {"owner": {"$ref": "#/$defs/person"}}
                    }
                },
                "type": "object",
                "properties": {"author": {"$ref": "#/$defs/person"}}
            })
        };
        let old = schema(json!({"type": "string"}));
        let new = schema(json!({"type": "string", "maxLength": 80}));
        let found = reader_rejects(&old, &new);
        assert_eq!(
            found.iter().map(|i| i.path.as_str()).collect::<Vec<_>>(),
            ["/$defs/person/properties/name/maxLength"]
        );
        assert!(reader_rejects(&new, &old).is_empty());
    }

    #[test]
    fn too_deep_a_schema_is_a_break_not_a_crash() {
        let mut deep = json!({"type": "string"});
        for _ in 0..1000 {
            deep = json!({"type": "array", "items": deep});
        }
        let found = reader_rejects(&deep, &deep);
        assert!(
            found.iter().any(|i| i.message.contains("too deep")),
            "{found:?}"
        );
    }

    #[test]
    fn paths_point_into_the_new_schema() {
        let old = json!({
            "type": "object",
            "properties": {
                "customer": {
                    "type": "object",
                    "properties": {"age": {"type": "number"}, "a/b~c": {"type": "string"}}
                }
            }
        });
        let new = json!({
            "type": "object",
            "properties": {
                "customer": {
                    "type": "object",
                    "properties": {"age": {"type": "integer"}, "a/b~c": {"type": "integer"}}
                }
            }
        });
        let found = check(Mode::Backward, &new, &previous(&[old]));
        let paths: Vec<&str> = found.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/properties/customer/properties/a~1b~0c/type",
                "/properties/customer/properties/age/type"
            ]
        );
        assert!(
            found[1]
                .message
                .starts_with("type narrowed from `number` to `integer`")
        );
        assert!(
            found[1].message.contains("non-integer numbers"),
            "{}",
            found[1].message
        );
    }

    #[test]
    fn removed_things_point_into_the_old_schema_and_say_so() {
        let old = json!({
            "type": "object",
            "properties": {"id": {"type": "integer"}, "email": {"type": "string"}},
            "additionalProperties": false
        });
        let new = json!({
            "type": "object",
            "properties": {"id": {"type": "integer"}},
            "additionalProperties": false
        });
        let found = check(Mode::Backward, &new, &previous(std::slice::from_ref(&old)));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "/properties/email");
        assert!(
            found[0]
                .message
                .contains("removed from a closed content model")
        );
        assert!(found[0].message.ends_with("(path in the old schema)"));
        assert_eq!(found[0].against.as_deref(), Some("1"));

        // Registering the old one after the new one: added, in the new schema.
        let found = check(Mode::Forward, &old, &previous(&[new]));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "/properties/email");
        assert!(found[0].message.contains("added to a closed content model"));
        assert!(!found[0].message.contains("path in the old schema"));
    }

    #[test]
    fn the_whole_schema_is_hash() {
        let found = reader_rejects(&json!({"type": "string"}), &json!(false));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, "#");
    }

    #[test]
    fn required_and_closing_point_at_their_keywords() {
        let old = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        let new = json!({
            "type": "object",
            "properties": {"a": {"type": "string"}},
            "required": ["a"],
            "additionalProperties": false
        });
        let found = reader_rejects(&old, &new);
        let paths: Vec<&str> = found.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["/additionalProperties", "/required"]);
        assert!(found[0].message.starts_with("content model closed"));
        assert!(found[1].message.contains("`a` added without a default"));
    }

    #[test]
    fn unresolvable_references_are_judged_by_their_text() {
        let remote = json!({"$ref": "https://example.com/money.json"});
        assert!(reader_rejects(&remote, &remote).is_empty());
        let other = json!({"$ref": "https://example.com/other.json"});
        let found = reader_rejects(&remote, &other);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, "/$ref");
        assert!(found[0].message.contains("cannot be resolved"));
    }

    #[test]
    fn unjudged_keywords_break_only_when_they_change() {
        let old = json!({"type": "object", "propertyNames": {"maxLength": 8}});
        assert!(reader_rejects(&old, &old).is_empty());
        let new = json!({"type": "object", "propertyNames": {"maxLength": 4}});
        let found = reader_rejects(&old, &new);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, "/propertyNames");
        assert_eq!(
            found[0].message,
            "changed `propertyNames`; not judged compatible"
        );
    }

    #[test]
    fn non_transitive_modes_check_the_latest_version_only() {
        let v1 = json!({"type": "integer", "maximum": 100});
        let v2 = json!({"type": "integer", "maximum": 50});
        let v3 = json!({"type": "integer", "maximum": 50, "description": "percent"});
        let versions = previous(&[v1, v2]);
        assert!(check(Mode::Backward, &v3, &versions).is_empty());
        let found = check(Mode::BackwardTransitive, &v3, &versions);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].against.as_deref(), Some("1"));
        assert_eq!(found[0].path, "/maximum");
        assert_eq!(
            found[0].message,
            "upper bound tightened from `maximum: 100` to `maximum: 50`"
        );
        assert!(check(Mode::None, &json!(false), &versions).is_empty());
        assert!(check(Mode::FullTransitive, &v3, &[]).is_empty());
    }

    #[test]
    fn modes_parse_by_name_in_any_case() {
        for mode in Mode::ALL {
            assert_eq!(mode.as_str().parse::<Mode>(), Ok(mode));
            assert_eq!(mode.as_str().to_lowercase().parse::<Mode>(), Ok(mode));
        }
        let e = "SIDEWAYS".parse::<Mode>().unwrap_err().to_string();
        assert!(e.contains("`SIDEWAYS`"), "{e}");
        assert!(e.contains("BACKWARD, BACKWARD_TRANSITIVE"), "{e}");
        assert!(e.contains("NONE"), "{e}");
        assert_eq!(
            serde_json::to_value(Mode::FullTransitive).unwrap(),
            json!("FULL_TRANSITIVE")
        );
    }

    #[test]
    fn value_lists_are_pointed_at_in_the_new_schema() {
        let old = json!({"properties": {"kind": {"const": "a"}}});
        let new = json!({"properties": {"kind": {"enum": ["a", "b"]}}});
        let found = check(Mode::Forward, &new, &previous(&[old]));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "/properties/kind/enum");
        assert_eq!(
            found[0].message,
            "`\"b\"` now allowed, which the old schema's `const` rejects"
        );
    }

    #[test]
    fn a_type_where_there_was_none_is_named_as_added() {
        let found = reader_rejects(&json!({}), &json!({"type": "object"}));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "/type");
        assert_eq!(
            found[0].message,
            "type `object` added: the reader schema rejects values of type `null`, `boolean`, \
             `array`, `number`, `string`"
        );
    }

    #[test]
    fn alternatives_inside_alternatives_are_bounded() {
        // Twelve levels of five branches, each level a definition the next
        // refers to, and no branch fits: a small schema, but without the
        // step limit the comparison would try 25^12 pairs.
        let chain = |leaf: &str| {
            let mut defs = serde_json::Map::new();
            defs.insert("level0".into(), json!({"type": leaf}));
            for level in 1..=12 {
                let inner = format!("#/$defs/level{}", level - 1);
                let branches: Vec<Value> = (0..5)
                    .map(|i| json!({"type": "array", "minItems": i, "items": {"$ref": inner}}))
                    .collect();
                defs.insert(format!("level{level}"), json!({"oneOf": branches}));
            }
            json!({"$defs": defs, "$ref": "#/$defs/level12"})
        };
        let found = reader_rejects(&chain("string"), &chain("integer"));
        assert!(!found.is_empty());
        assert!(reader_rejects(&chain("string"), &chain("string")).is_empty());
    }

    #[test]
    fn forward_messages_word_the_change_from_old_to_new() {
        let old = json!({"type": "integer"});
        let new = json!({"type": "number"});
        let found = check(Mode::Forward, &new, &previous(&[old]));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "/type");
        assert_eq!(
            found[0].message,
            "type widened from `integer` to `number`: the old schema rejects non-integer numbers"
        );
    }
}

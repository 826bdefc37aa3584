//! Events' data as the validators read it: one flat vector of slots
//! borrowing the event's bytes, instead of a `serde_json::Value`.
//!
//! Parsing an event into a `Value` (a `String` per key and string, a
//! `BTreeMap` per object, all dropped again right after) cost several times
//! what the compiled validators do (docs/BENCHMARKS.md, "What schema
//! validation costs"). A [`Tape`] is one allocation: strings without escapes
//! borrow the bytes, containers record where they end so that a walk can
//! skip them, and numbers are kept as serde_json reads them (`u64`, `i64` or
//! `f64`). `jsonschema` validates it through its representation traits
//! ([`jsonschema::json`]), with the same keywords and the same errors as for
//! a `Value`.

use std::borrow::Cow;
use std::fmt;

use jsonschema::JsonType;
use jsonschema::json::{Array, Json, JsonNumber, Node, NodeIdentity, Object};
use serde_json::Value;

/// One JSON value or object key (16 bytes: no pointers, so a vector of
/// them is reused from one document to the next).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Slot {
    Null,
    Bool(bool),
    U(u64),
    I(i64),
    F(f64),
    /// A string without escapes: `len` bytes of the text from `start`.
    Str {
        start: u32,
        len: u32,
    },
    /// A string with escapes, decoded: the `n`th of the tape's `escaped`.
    Esc(u32),
    /// `len` elements follow; `end` is the index after the last slot of the
    /// array.
    Arr {
        len: u32,
        end: u32,
    },
    /// `len` pairs of a key (a `Str`) and a value follow; `end` as for
    /// arrays.
    Obj {
        len: u32,
        end: u32,
    },
}

/// A parsed JSON document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tape<'a> {
    text: &'a str,
    slots: Vec<Slot>,
    escaped: Vec<String>,
}

/// Why bytes are not one JSON value, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    message: Cow<'static, str>,
    line: usize,
    column: usize,
    duplicate: bool,
}

impl ParseError {
    /// Whether the bytes are JSON but an object has a key twice: which of
    /// its values a reader takes is undefined (RFC 8259 §4; serde_json
    /// takes the last, others the first), so no schema can vouch for it.
    pub fn is_duplicate_key(&self) -> bool {
        self.duplicate
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at line {} column {}",
            self.message, self.line, self.column
        )
    }
}

impl std::error::Error for ParseError {}

/// Nesting deeper than this is refused, as serde_json refuses it (the
/// validators and `to_value` recurse).
const MAX_DEPTH: usize = 127;

impl<'a> Tape<'a> {
    /// Parse `bytes`: one JSON value (RFC 8259), whitespace around it
    /// allowed.
    pub fn parse(bytes: &'a [u8]) -> Result<Tape<'a>, ParseError> {
        Tape::parse_into(bytes, Vec::new()).map_err(|(e, _)| e)
    }

    /// [`Tape::parse`] into `slots` (cleared first), so that one vector
    /// serves document after document (see [`Tape::into_slots`]); on an
    /// error the vector comes back with it.
    pub fn parse_into(
        bytes: &'a [u8],
        mut slots: Vec<Slot>,
    ) -> Result<Tape<'a>, (ParseError, Vec<Slot>)> {
        slots.clear();
        // Checked as UTF-8 once, in bulk, rather than string by string.
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => return Err((error_at(bytes, e.valid_up_to(), "invalid UTF-8"), slots)),
        };
        // A slot per 6 bytes or so is typical of events; growing is fine.
        slots.reserve(bytes.len() / 6 + 4);
        let mut p = Parser {
            text,
            b: bytes,
            at: 0,
            slots,
            escaped: Vec::new(),
            duplicate: None,
            keys: [(0, 0); 16],
            nkeys: 0,
            keys_spilled: false,
        };
        match p.document() {
            Ok(()) => Ok(Tape {
                text,
                slots: p.slots,
                escaped: p.escaped,
            }),
            Err(message) => {
                let e = match p.duplicate.take() {
                    Some((key, at)) => ParseError {
                        duplicate: true,
                        message: format!("the key {key:?} appears twice in one object").into(),
                        ..error_at(bytes, at, "")
                    },
                    None => error_at(bytes, p.at, message),
                };
                Err((e, p.slots))
            }
        }
    }

    /// The slots' vector, for the next [`Tape::parse_into`].
    pub fn into_slots(self) -> Vec<Slot> {
        self.slots
    }

    /// The document's root value.
    pub fn root(&self) -> TapeNode<'_> {
        TapeNode { tape: self, at: 0 }
    }

    /// The string in slot `at`, if it holds one.
    #[inline]
    fn string_at(&self, at: usize) -> Option<&str> {
        match self.slots[at] {
            Slot::Str { start, len } => Some(&self.text[start as usize..(start + len) as usize]),
            Slot::Esc(n) => Some(&self.escaped[n as usize]),
            _ => None,
        }
    }
}

fn error_at(bytes: &[u8], at: usize, message: &'static str) -> ParseError {
    let before = &bytes[..at.min(bytes.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let column = before.len()
        - before
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |p| p + 1)
        + 1;
    ParseError {
        message: message.into(),
        line,
        column,
        duplicate: false,
    }
}

struct Parser<'a> {
    text: &'a str,
    b: &'a [u8],
    at: usize,
    slots: Vec<Slot>,
    escaped: Vec<String>,
    /// A key found twice, and where its second one is.
    duplicate: Option<(String, usize)>,
    /// The keys of the objects open now, innermost last: each key's
    /// [`word`] and slot (checked for a key twice when its object closes).
    keys: [(u64, usize); 16],
    nkeys: usize,
    /// More keys were pending than `keys` holds: objects closing from then
    /// on walk their members instead.
    keys_spilled: bool,
}

/// A key's length, first, middle and last byte: keys with different words
/// differ, so only keys with the same word are compared in full.
fn word(b: &[u8]) -> u64 {
    match b.len() {
        0 => 0,
        n => {
            n as u64 | u64::from(b[0]) << 32 | u64::from(b[n / 2]) << 40 | u64::from(b[n - 1]) << 48
        }
    }
}

type Step = Result<(), &'static str>;

/// Bytes that end a run of plain string content: `"`, `\` and control
/// characters.
static SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

impl<'a> Parser<'a> {
    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.at).copied()
    }

    #[inline(always)]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// The whole input: one value. No recursion and no stack of its own:
    /// while a container is open, its slot's `end` holds its parent's slot
    /// (plus one; 0 for none), set right when it closes.
    fn document(&mut self) -> Step {
        // The innermost open container (slot + 1; 0 for none), and how deep.
        let mut open = 0usize;
        let mut depth = 0usize;
        self.ws();
        loop {
            // A value starts here.
            match self.peek() {
                Some(c @ (b'{' | b'[')) => {
                    if depth >= MAX_DEPTH {
                        return Err("more than 127 nested arrays and objects");
                    }
                    self.at += 1;
                    let object = c == b'{';
                    let parent = u32::try_from(open).map_err(|_| "document too large")?;
                    let slot = self.slots.len();
                    self.slots.push(if object {
                        Slot::Obj {
                            len: 0,
                            end: parent,
                        }
                    } else {
                        Slot::Arr {
                            len: 0,
                            end: parent,
                        }
                    });
                    self.ws();
                    let close = if object { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.at += 1;
                        self.close(slot)?;
                    } else {
                        open = slot + 1;
                        depth += 1;
                        if object {
                            self.key()?;
                        }
                        continue;
                    }
                }
                Some(b'"') => {
                    let s = self.string()?;
                    self.slots.push(s);
                }
                Some(b't') => self.literal("true", Slot::Bool(true))?,
                Some(b'f') => self.literal("false", Slot::Bool(false))?,
                Some(b'n') => self.literal("null", Slot::Null)?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(_) => return Err("expected a value"),
                None => return Err("EOF while parsing a value"),
            }
            // A value ended: count it in its container, and close the
            // containers that end here.
            loop {
                if open == 0 {
                    self.ws();
                    return match self.peek() {
                        None => Ok(()),
                        Some(_) => Err("trailing characters"),
                    };
                }
                let slot = open - 1;
                let object = match &mut self.slots[slot] {
                    Slot::Obj { len, .. } => {
                        *len += 1;
                        true
                    }
                    Slot::Arr { len, .. } => {
                        *len += 1;
                        false
                    }
                    _ => unreachable!("an open container is an array or an object"),
                };
                self.ws();
                match (self.peek(), object) {
                    (Some(b','), object) => {
                        self.at += 1;
                        self.ws();
                        if object {
                            self.key()?;
                        }
                        break;
                    }
                    (Some(b'}'), true) | (Some(b']'), false) => {
                        self.at += 1;
                        open = self.close(slot)?;
                        depth -= 1;
                    }
                    (None, _) => return Err("EOF while parsing a list or an object"),
                    (_, true) => return Err("expected `,` or `}`"),
                    (_, false) => return Err("expected `,` or `]`"),
                }
            }
        }
    }

    /// Close the container at `slot`: its `end` becomes the index after its
    /// last slot. Its parent (as `open` holds it) is returned.
    fn close(&mut self, slot: usize) -> Result<usize, &'static str> {
        let after = u32::try_from(self.slots.len()).map_err(|_| "document too large")?;
        let (parent, members) = match &mut self.slots[slot] {
            Slot::Obj { end, len } => {
                let parent = *end as usize;
                *end = after;
                (parent, *len as usize)
            }
            Slot::Arr { end, .. } => {
                let parent = *end as usize;
                *end = after;
                return Ok(parent);
            }
            _ => unreachable!("only containers close"),
        };
        if self.keys_spilled {
            // Past the stack (16 keys pending): walk this object's members.
            if members > 1 {
                self.unique_keys(slot)?;
            }
        } else {
            // Its keys are the last `members` on the stack: the keys of
            // objects inside it were taken off when those closed.
            let from = self.nkeys - members;
            for j in from + 1..self.nkeys {
                let (w, k) = self.keys[j];
                for &(v, i) in &self.keys[from..j] {
                    if v == w && self.key_at(i) == self.key_at(k) {
                        return self.twice(k);
                    }
                }
            }
            self.nkeys = from;
        }
        Ok(parent)
    }

    /// Fail on the key in slot `k`, which its object has already.
    fn twice(&mut self, k: usize) -> Result<usize, &'static str> {
        let at = match self.slots[k] {
            // Where the key is (its opening quote).
            Slot::Str { start, .. } => start as usize - 1,
            _ => self.at,
        };
        self.duplicate = Some((self.key_at(k).to_owned(), at));
        Err("duplicate key")
    }

    /// The key in slot `at`.
    fn key_at(&self, at: usize) -> &str {
        match self.slots[at] {
            Slot::Str { start, len } => &self.text[start as usize..(start + len) as usize],
            Slot::Esc(n) => &self.escaped[n as usize],
            _ => unreachable!("an object's members start with a key"),
        }
    }

    /// Refuse an object (closed, at `slot`) with a key twice, walking its
    /// members (when the stack of keys could not hold them).
    fn unique_keys(&mut self, slot: usize) -> Step {
        let Slot::Obj { end, .. } = self.slots[slot] else {
            return Ok(());
        };
        // The members' key slots: a member's value ends where the next key is.
        let keys = std::iter::successors(Some(slot + 1), |at| {
            let next = match self.slots[at + 1] {
                Slot::Arr { end, .. } | Slot::Obj { end, .. } => end as usize,
                _ => at + 2,
            };
            (next < end as usize).then_some(next)
        });
        let mut sorted: Vec<(&str, usize)> = keys.map(|k| (self.key_at(k), k)).collect();
        sorted.sort_unstable();
        let twice = sorted
            .windows(2)
            .find(|w| w[0].0 == w[1].0)
            .map(|w| w[0].1.max(w[1].1));
        match twice {
            Some(k) => self.twice(k).map(|_| ()),
            None => Ok(()),
        }
    }

    /// A member's key and its colon; the value follows.
    #[inline(always)]
    fn key(&mut self) -> Step {
        match self.peek() {
            Some(b'"') => {}
            Some(_) => return Err("key must be a string"),
            None => return Err("EOF while parsing an object"),
        }
        let k = self.string()?;
        // Its word on the stack of the open objects' keys (see `close`).
        if self.nkeys < self.keys.len() {
            let bytes = match k {
                Slot::Str { start, len } => &self.b[start as usize..(start + len) as usize],
                Slot::Esc(n) => self.escaped[n as usize].as_bytes(),
                _ => unreachable!("a key is a string"),
            };
            self.keys[self.nkeys] = (word(bytes), self.slots.len());
            self.nkeys += 1;
        } else {
            self.keys_spilled = true;
        }
        self.slots.push(k);
        self.ws();
        if self.peek() != Some(b':') {
            return Err("expected `:`");
        }
        self.at += 1;
        self.ws();
        Ok(())
    }

    fn literal(&mut self, word: &'static str, slot: Slot) -> Step {
        if self.b[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            self.slots.push(slot);
            Ok(())
        } else {
            Err("expected a value")
        }
    }

    fn digits(&mut self) -> usize {
        let from = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        self.at - from
    }

    fn number(&mut self) -> Step {
        let from = self.at;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        // The integer part, accumulated as it is read (None past u64).
        let mut int = Some(0u64);
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => {
                while let Some(d @ b'0'..=b'9') = self.peek() {
                    int = int
                        .and_then(|n| n.checked_mul(10))
                        .and_then(|n| n.checked_add(u64::from(d - b'0')));
                    self.at += 1;
                }
            }
            _ => return Err("invalid number"),
        }
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.at += 1;
            float = true;
            if self.digits() == 0 {
                return Err("invalid number");
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            float = true;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if self.digits() == 0 {
                return Err("invalid number");
            }
        }
        // Integers as serde_json reads them: u64, else i64, else f64.
        if !float && let Some(n) = int {
            if !negative {
                self.slots.push(Slot::U(n));
                return Ok(());
            }
            if let Ok(i) = i64::try_from(-i128::from(n)) {
                self.slots.push(Slot::I(i));
                return Ok(());
            }
        }
        match self.text[from..self.at].parse::<f64>() {
            Ok(f) if f.is_finite() => {
                self.slots.push(Slot::F(f));
                Ok(())
            }
            _ => Err("number out of range"),
        }
    }

    /// A string at `"`: where it is in the text, or (with escapes) decoded
    /// into `escaped`.
    #[inline(always)]
    fn string(&mut self) -> Result<Slot, &'static str> {
        let from = self.at + 1;
        let run = self.b[from..].iter().position(|c| SPECIAL[usize::from(*c)]);
        let Some(n) = run else {
            self.at = self.b.len();
            return Err("EOF while parsing a string");
        };
        self.at = from + n;
        match self.b[self.at] {
            b'"' => {
                self.at += 1;
                let start = u32::try_from(from).map_err(|_| "document too large")?;
                let len = u32::try_from(n).map_err(|_| "document too large")?;
                return Ok(Slot::Str { start, len });
            }
            b'\\' => {}
            _ => return Err("control character in a string"),
        }
        let mut out = String::with_capacity(self.at - from + 16);
        out.push_str(&self.text[from..self.at]);
        loop {
            let run = self.at;
            while let Some(c) = self.peek() {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.at += 1;
            }
            out.push_str(&self.text[run..self.at]);
            match self.peek() {
                Some(b'"') => {
                    self.at += 1;
                    let n = u32::try_from(self.escaped.len()).map_err(|_| "document too large")?;
                    self.escaped.push(out);
                    return Ok(Slot::Esc(n));
                }
                Some(b'\\') => {
                    self.at += 1;
                    self.escape(&mut out)?;
                }
                Some(_) => return Err("control character in a string"),
                None => return Err("EOF while parsing a string"),
            }
        }
    }

    /// The escape after a backslash.
    fn escape(&mut self, out: &mut String) -> Step {
        let c = self.peek().ok_or("EOF while parsing a string")?;
        self.at += 1;
        out.push(match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = self.hex4()?;
                let code = match hi {
                    0xD800..=0xDBFF => {
                        if !self.b[self.at..].starts_with(b"\\u") {
                            return Err("lone leading surrogate in hex escape");
                        }
                        self.at += 2;
                        let lo = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return Err("lone leading surrogate in hex escape");
                        }
                        0x10000 + ((u32::from(hi) - 0xD800) << 10) + (u32::from(lo) - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return Err("lone trailing surrogate in hex escape"),
                    n => u32::from(n),
                };
                char::from_u32(code).ok_or("invalid unicode code point")?
            }
            _ => return Err("invalid escape"),
        });
        Ok(())
    }

    fn hex4(&mut self) -> Result<u16, &'static str> {
        let digits = self
            .b
            .get(self.at..self.at + 4)
            .ok_or("EOF while parsing a string")?;
        let mut n: u16 = 0;
        for d in digits {
            let v = (*d as char).to_digit(16).ok_or("invalid escape")?;
            n = n * 16 + v as u16;
        }
        self.at += 4;
        Ok(n)
    }
}

/// The representation, for `jsonschema::options_for::<TapeJson>()`.
pub struct TapeJson;

/// A value in a tape.
#[derive(Debug, Clone, Copy)]
pub struct TapeNode<'a> {
    tape: &'a Tape<'a>,
    at: usize,
}

impl<'a> TapeNode<'a> {
    #[inline]
    fn slot(&self) -> &'a Slot {
        &self.tape.slots[self.at]
    }

    /// The index after this value's last slot.
    #[inline]
    fn after(&self) -> usize {
        match self.slot() {
            Slot::Arr { end, .. } | Slot::Obj { end, .. } => *end as usize,
            _ => self.at + 1,
        }
    }

    #[inline]
    fn at(&self, at: usize) -> TapeNode<'a> {
        TapeNode {
            tape: self.tape,
            at,
        }
    }
}

impl Json for TapeJson {
    type Node<'a> = TapeNode<'a>;
    type PreparedKey = String;
    type StringBuffer = Tape<'static>;

    // A lookup scans the members, so a pass over them is never dearer.
    const KEYS_PER_LOOKUP: usize = 8;
    const ACYCLIC: bool = true;

    #[inline]
    fn prepare_key(key: &str) -> String {
        key.to_owned()
    }

    #[inline]
    fn with_string_node<T>(
        buffer: &mut Tape<'static>,
        string: &str,
        f: impl FnOnce(TapeNode<'_>) -> T,
    ) -> T {
        buffer.slots.clear();
        buffer.slots.push(Slot::Esc(0));
        match buffer.escaped.first_mut() {
            Some(s) => {
                s.clear();
                s.push_str(string);
            }
            None => buffer.escaped.push(string.to_owned()),
        }
        f(TapeNode {
            tape: buffer,
            at: 0,
        })
    }
}

/// A number as serde_json read it.
#[derive(Debug, Clone, Copy)]
pub enum TapeNumber {
    U(u64),
    I(i64),
    F(f64),
}

impl TapeNumber {
    #[inline]
    fn number(self) -> serde_json::Number {
        match self {
            TapeNumber::U(u) => u.into(),
            TapeNumber::I(i) => i.into(),
            // serde_json reads no NaN or infinity.
            TapeNumber::F(f) => serde_json::Number::from_f64(f).unwrap_or_else(|| 0.into()),
        }
    }
}

impl JsonNumber for TapeNumber {
    #[inline]
    fn as_u64(&self) -> Option<u64> {
        match *self {
            TapeNumber::U(u) => Some(u),
            TapeNumber::I(i) => u64::try_from(i).ok(),
            TapeNumber::F(_) => None,
        }
    }

    #[inline]
    fn as_i64(&self) -> Option<i64> {
        match *self {
            TapeNumber::U(u) => i64::try_from(u).ok(),
            TapeNumber::I(i) => Some(i),
            TapeNumber::F(_) => None,
        }
    }

    #[inline]
    fn as_f64(&self) -> Option<f64> {
        Some(match *self {
            TapeNumber::U(u) => u as f64,
            TapeNumber::I(i) => i as f64,
            TapeNumber::F(f) => f,
        })
    }

    #[inline]
    fn as_str(&self) -> Cow<'_, str> {
        Cow::Owned(self.number().to_string())
    }

    #[inline]
    fn to_number(&self) -> Cow<'_, serde_json::Number> {
        Cow::Owned(self.number())
    }

    #[inline]
    fn is_integer(&self) -> bool {
        match *self {
            TapeNumber::U(_) | TapeNumber::I(_) => true,
            TapeNumber::F(f) => f.fract() == 0.0,
        }
    }

    #[inline]
    fn is_written_as_integer(&self) -> bool {
        !matches!(self, TapeNumber::F(_))
    }
}

impl<'a> Node<'a, TapeJson> for TapeNode<'a> {
    type Object = TapeObject<'a>;
    type Array = TapeArray<'a>;
    type Number = TapeNumber;

    #[inline]
    fn as_object(&self) -> Option<TapeObject<'a>> {
        match self.slot() {
            Slot::Obj { len, end } => Some(TapeObject {
                node: *self,
                len: *len as usize,
                end: *end as usize,
            }),
            _ => None,
        }
    }

    #[inline]
    fn as_array(&self) -> Option<TapeArray<'a>> {
        match self.slot() {
            Slot::Arr { len, end } => Some(TapeArray {
                node: *self,
                len: *len as usize,
                end: *end as usize,
            }),
            _ => None,
        }
    }

    #[inline]
    fn as_string(&self) -> Option<Cow<'a, str>> {
        self.tape.string_at(self.at).map(Cow::Borrowed)
    }

    #[inline]
    fn as_number(&self) -> Option<TapeNumber> {
        match *self.slot() {
            Slot::U(u) => Some(TapeNumber::U(u)),
            Slot::I(i) => Some(TapeNumber::I(i)),
            Slot::F(f) => Some(TapeNumber::F(f)),
            _ => None,
        }
    }

    #[inline]
    fn as_boolean(&self) -> Option<bool> {
        match self.slot() {
            Slot::Bool(b) => Some(*b),
            _ => None,
        }
    }

    #[inline]
    fn is_null(&self) -> bool {
        matches!(self.slot(), Slot::Null)
    }

    #[inline]
    fn json_type(&self) -> JsonType {
        match self.slot() {
            Slot::Null => JsonType::Null,
            Slot::Bool(_) => JsonType::Boolean,
            Slot::U(_) | Slot::I(_) | Slot::F(_) => JsonType::Number,
            Slot::Str { .. } | Slot::Esc(_) => JsonType::String,
            Slot::Arr { .. } => JsonType::Array,
            Slot::Obj { .. } => JsonType::Object,
        }
    }

    #[inline]
    fn equals_value(&self, expected: &Value) -> bool {
        // Scalars without building a `Value` (`enum` and `const` run this
        // per event); containers through the default.
        if let Some(s) = self.tape.string_at(self.at) {
            return matches!(expected, Value::String(e) if s == e);
        }
        match (self.slot(), expected) {
            (Slot::Bool(b), Value::Bool(e)) => b == e,
            (Slot::Null, Value::Null) => true,
            (Slot::Bool(_) | Slot::Null, _) => false,
            _ => jsonschema::json::cmp::equal(&self.to_value(), expected),
        }
    }

    #[inline]
    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(match self.slot() {
            Slot::Null => Value::Null,
            Slot::Bool(b) => Value::Bool(*b),
            Slot::U(u) => (*u).into(),
            Slot::I(i) => (*i).into(),
            Slot::F(f) => Value::Number(TapeNumber::F(*f).number()),
            Slot::Str { .. } | Slot::Esc(_) => {
                Value::String(self.tape.string_at(self.at).unwrap_or_default().to_owned())
            }
            Slot::Arr { .. } => Value::Array(
                self.as_array()
                    .into_iter()
                    .flat_map(|a| a.elements())
                    .map(|e| e.to_value().into_owned())
                    .collect(),
            ),
            Slot::Obj { .. } => Value::Object(
                self.as_object()
                    .into_iter()
                    .flat_map(|o| o.members())
                    .map(|(k, v)| (k.to_owned(), v.to_value().into_owned()))
                    .collect(),
            ),
        })
    }

    #[inline]
    fn identity(&self) -> Option<NodeIdentity> {
        Some(NodeIdentity::tagged(
            self.tape.slots.as_ptr() as usize,
            u32::try_from(self.at).unwrap_or(u32::MAX),
        ))
    }
}

/// An object's members.
#[derive(Debug, Clone, Copy)]
pub struct TapeObject<'a> {
    node: TapeNode<'a>,
    len: usize,
    end: usize,
}

/// Walks an object's members.
pub struct Members<'a> {
    node: TapeNode<'a>,
    next: usize,
    end: usize,
}

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, TapeNode<'a>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let key = self
            .node
            .tape
            .string_at(self.next)
            .expect("an object's members start with a key");
        let value = self.node.at(self.next + 1);
        self.next = value.after();
        Some((key, value))
    }
}

impl<'a> Object<'a, TapeJson> for TapeObject<'a> {
    type Node = TapeNode<'a>;
    type MemberName = &'a str;
    type MembersIter = Members<'a>;

    #[inline]
    fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn get(&self, key: &String) -> Option<TapeNode<'a>> {
        // Keys are unique: the parser refuses an object with a key twice.
        self.members()
            .find(|(k, _)| *k == key.as_str())
            .map(|(_, v)| v)
    }

    #[inline]
    fn members(&self) -> Members<'a> {
        Members {
            node: self.node,
            next: self.node.at + 1,
            end: self.end,
        }
    }
}

/// An array's elements.
#[derive(Debug, Clone, Copy)]
pub struct TapeArray<'a> {
    node: TapeNode<'a>,
    len: usize,
    end: usize,
}

/// Walks an array's elements.
pub struct Elements<'a> {
    node: TapeNode<'a>,
    next: usize,
    end: usize,
}

impl<'a> Iterator for Elements<'a> {
    type Item = TapeNode<'a>;

    #[inline]
    fn next(&mut self) -> Option<TapeNode<'a>> {
        if self.next >= self.end {
            return None;
        }
        let e = self.node.at(self.next);
        self.next = e.after();
        Some(e)
    }
}

impl<'a> Array<'a, TapeJson> for TapeArray<'a> {
    type Node = TapeNode<'a>;
    type ElementsIter = Elements<'a>;

    #[inline]
    fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn elements(&self) -> Elements<'a> {
        Elements {
            node: self.node,
            next: self.node.at + 1,
            end: self.end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_representation_meets_the_contract_jsonschema_relies_on() {
        let text = jsonschema::json::conformance::document().to_string();
        let tape = Tape::parse(text.as_bytes()).unwrap();
        jsonschema::json::conformance::assert_conformance::<TapeJson>(&tape.root());
    }

    #[test]
    fn a_document_reads_back_as_the_value_it_was_written_from() {
        let v = json!({"a": [1, -2, 2.5, {"b": null, "c\"q": "x\u{e9}\n"}], "d": {}, "e": [],
                       "f": true, "big": u64::MAX, "s": ""});
        let text = v.to_string();
        let tape = Tape::parse(text.as_bytes()).unwrap();
        assert_eq!(tape.root().to_value().into_owned(), v);
        // Strings without escapes are where they are in the text; the
        // others, decoded.
        assert_eq!(tape.escaped, ["c\"q", "x\u{e9}\n"]);
        assert_eq!(std::mem::size_of::<Slot>(), 16);
    }

    #[test]
    fn bad_json_is_refused_naming_what_and_where() {
        let e = Tape::parse(b"{\"a\": 1,\n \"b\": }").unwrap_err();
        assert_eq!(e.to_string(), "expected a value at line 2 column 7");
        let e = Tape::parse(b"{} x").unwrap_err();
        assert_eq!(e.to_string(), "trailing characters at line 1 column 4");
        assert!(Tape::parse(b" [1, 2] ").is_ok());
        assert!(Tape::parse(b"\"\\ud800\"").is_err());
        assert!(Tape::parse(b"1e999").is_err());
        assert!(Tape::parse(b"\"a\tb\"").is_err());
    }

    /// Whether serde_json reads `bytes` as a `Value`.
    fn serde_reads(bytes: &[u8]) -> bool {
        serde_json::from_slice::<Value>(bytes).is_ok()
    }

    #[test]
    fn nesting_is_limited_where_serde_json_limits_it() {
        for depth in 120..=132 {
            let doc = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            assert_eq!(
                Tape::parse(doc.as_bytes()).is_ok(),
                serde_reads(doc.as_bytes()),
                "depth {depth}"
            );
        }
    }

    /// Values equal, numbers compared as serde_json compares a document
    /// read twice (an integer written `2` and one read as `2.0` differ).
    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
            }
            _ => a == b,
        }
    }

    fn json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e300f64..1e300).prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(".{0,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn any_document_reads_as_serde_json_reads_it(v in json(), pretty in proptest::bool::ANY) {
            let text = if pretty { serde_json::to_string_pretty(&v) } else { serde_json::to_string(&v) }.unwrap();
            let tape = Tape::parse(text.as_bytes()).unwrap();
            let back = tape.root().to_value().into_owned();
            proptest::prop_assert!(same(&back, &v), "{} read as {}", text, back);
        }

        #[test]
        fn damaged_documents_are_refused_as_serde_json_refuses_them(
            v in json(),
            cuts in proptest::collection::vec((0usize..400, proptest::num::u8::ANY), 1..4),
        ) {
            let mut bytes = serde_json::to_vec(&v).unwrap();
            for (at, b) in cuts {
                if bytes.is_empty() {
                    break;
                }
                let at = at % bytes.len();
                bytes[at] = b;
            }
            // A key made twice is JSON (serde_json reads it) that the tape
            // refuses on purpose.
            let tape_reads = match Tape::parse(&bytes) {
                Ok(_) => true,
                Err(e) => e.is_duplicate_key(),
            };
            proptest::prop_assert_eq!(
                tape_reads,
                serde_reads(&bytes),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }

    #[test]
    fn a_key_twice_in_one_object_is_refused_and_named() {
        // What a closed schema's `required` shortcut (`len == declared`)
        // would count as complete: `amount` missing, `order_id` twice.
        let e = Tape::parse(br#"{"order_id":"o","order_id":"o","customer":"c"}"#).unwrap_err();
        assert!(e.is_duplicate_key());
        assert_eq!(
            e.to_string(),
            r#"the key "order_id" appears twice in one object at line 1 column 17"#
        );
        // Written differently, the same key.
        assert!(
            Tape::parse(br#"{"a":1,"b":{"c":2},"a":3}"#)
                .unwrap_err()
                .is_duplicate_key()
        );
        // Many keys; past 16 pending at once, objects are checked by
        // sorting their keys instead.
        for n in [40, 70] {
            let many: Vec<String> = (0..n)
                .map(|i| format!("\"k{i}\":{{\"k{i}\":{i}}}"))
                .collect();
            let ok = format!("{{{}}}", many.join(","));
            assert!(Tape::parse(ok.as_bytes()).is_ok(), "{n}");
            let twice = format!("{{{},\"k7\":0}}", many.join(","));
            let e = Tape::parse(twice.as_bytes()).unwrap_err();
            assert!(e.to_string().starts_with(r#"the key "k7""#), "{n}: {e}");
            let inner = format!("[{{{}}}, {{\"a\":{{\"b\":1,\"b\":2}}}}]", many.join(","));
            let e = Tape::parse(inner.as_bytes()).unwrap_err();
            assert!(e.to_string().starts_with(r#"the key "b""#), "{n}: {e}");
        }
        // The same key in different objects, or as a value, is fine.
        assert!(Tape::parse(br#"{"a":{"a":1},"b":[{"a":1},{"a":2}],"c":"a"}"#).is_ok());
        // Keys sharing their first seven bytes and length are told apart.
        assert!(Tape::parse(br#"{"abcdefgX":1,"abcdefgY":2}"#).is_ok());
    }

    #[test]
    fn validation_agrees_with_validating_a_value() {
        let schema = json!({"type": "object", "additionalProperties": false,
            "required": ["id", "items"],
            "properties": {"id": {"type": "string", "pattern": "^o-"},
                           "n": {"type": "integer", "minimum": 1},
                           "kind": {"enum": ["a", "b", 3]},
                           "items": {"type": "array", "minItems": 1, "uniqueItems": true,
                                     "items": {"type": "object", "required": ["sku"],
                                               "properties": {"sku": {"const": "s-1"}}}}}});
        let tape_v = jsonschema::options_for::<TapeJson>()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&schema)
            .unwrap();
        let value_v = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&schema)
            .unwrap();
        for doc in [
            json!({"id": "o-1", "items": [{"sku": "s-1"}]}),
            json!({"id": "o-1", "n": 2.0, "kind": 3, "items": [{"sku": "s-1"}]}),
            json!({"id": "x-1", "items": [{"sku": "s-1"}]}),
            json!({"id": "o-1", "n": 0, "items": [{"sku": "s-2"}, {"sku": "s-2"}]}),
            json!({"id": "o-1", "n": 1.5, "kind": "c", "items": []}),
            json!({"id": "o-1", "extra": 1, "items": [{"sku": "s-1"}]}),
            json!({"items": "no"}),
            json!([1, 2]),
        ] {
            let text = doc.to_string();
            let tape = Tape::parse(text.as_bytes()).unwrap();
            assert_eq!(
                tape_v.is_valid(tape.root()),
                value_v.is_valid(&doc),
                "{doc}"
            );
            let errors =
                |e: jsonschema::ValidationError<'_>| (e.instance_path().to_string(), e.to_string());
            let from_tape: Vec<_> = tape_v.iter_errors(tape.root()).map(errors).collect();
            let from_value: Vec<_> = value_v.iter_errors(&doc).map(errors).collect();
            assert_eq!(from_tape, from_value, "{doc}");
        }
    }
}

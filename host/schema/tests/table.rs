//! The compatibility table: every case of `tests/cases.json` under every
//! mode, and the same cases as the reference table in
//! `docs/schema-compatibility.md`.
//!
//! A case is three versions of a schema and, for each mode, whether the
//! registry may register the third after the first two. The verdicts were
//! worked out by hand from the rules; a failure prints the case, the mode,
//! the verdict expected and everything `check` returned.
//!
//! The docs table is generated from the same file. When a case changes, run
//! `SLUICE_BLESS=1 cargo test -p sluice-schema --test table` to rewrite the
//! part of the docs between the markers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;
use sluice_schema::{Incompatibility, Mode, check, reader_rejects};

const BEGIN: &str = "<!-- cases:begin -->";
const END: &str = "<!-- cases:end -->";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    category: String,
    /// The change in a few words, for the docs table.
    change: String,
    /// Oldest first; the last one is being registered.
    versions: Vec<Value>,
    /// Mode name to "may be registered".
    expected: BTreeMap<String, bool>,
}

impl Case {
    fn expected(&self, mode: Mode) -> Result<bool, String> {
        self.expected.get(mode.as_str()).copied().ok_or_else(|| {
            format!(
                "case `{}`: no expected verdict for {}",
                self.name,
                mode.as_str()
            )
        })
    }

    /// The earlier versions, named `1`, `2`, ..., and the new one.
    fn split(&self) -> (Vec<(String, Value)>, &Value) {
        let (new, previous) = self
            .versions
            .split_last()
            .unwrap_or_else(|| panic!("case `{}` has no versions", self.name));
        let previous = previous
            .iter()
            .enumerate()
            .map(|(i, v)| ((i + 1).to_string(), v.clone()))
            .collect();
        (previous, new)
    }
}

/// `relative` to this crate: where `cargo test` runs it from (set at run
/// time), else where it was built (a binary built in another checkout of
/// the same sources may be reused from a shared target directory).
fn manifest_path(relative: &str) -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join(relative)
}

fn cases() -> Vec<Case> {
    let path = manifest_path("tests/cases.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn verdict(compatible: bool) -> &'static str {
    if compatible {
        "compatible"
    } else {
        "incompatible"
    }
}

fn describe(found: &[Incompatibility]) -> String {
    if found.is_empty() {
        return "nothing".to_owned();
    }
    found
        .iter()
        .map(|i| format!("\n      {i}"))
        .collect::<String>()
}

#[test]
fn every_case_gets_its_expected_verdict_in_every_mode() {
    let cases = cases();
    let mut failures = Vec::new();
    for case in &cases {
        assert!(
            case.versions.len() >= 2,
            "case `{}` needs at least two versions",
            case.name
        );
        let (previous, new) = case.split();
        for mode in Mode::ALL {
            let expected = match case.expected(mode) {
                Ok(e) => e,
                Err(e) => {
                    failures.push(e);
                    continue;
                }
            };
            let found = check(mode, new, &previous);
            if found.is_empty() != expected {
                failures.push(format!(
                    "case `{}`, mode {}: expected {}, check returned {}",
                    case.name,
                    mode.as_str(),
                    verdict(expected),
                    describe(&found)
                ));
            }
            for i in &found {
                if i.path.is_empty() || i.message.is_empty() || i.against.is_none() {
                    failures.push(format!(
                        "case `{}`, mode {}: an incompatibility without a path, message or \
                         version: {i:?}",
                        case.name,
                        mode.as_str()
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} case/mode pairs failed:\n  {}",
        failures.len(),
        cases.len() * Mode::ALL.len(),
        failures.join("\n  ")
    );
}

#[test]
fn every_version_reads_itself() {
    let mut failures = Vec::new();
    for case in cases() {
        for (i, v) in case.versions.iter().enumerate() {
            let found = reader_rejects(v, v);
            if !found.is_empty() {
                failures.push(format!(
                    "case `{}`, version {}: rejects itself: {}",
                    case.name,
                    i + 1,
                    describe(&found)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_cases_cover_what_the_table_promises() {
    let cases = cases();
    assert!(cases.len() >= 44, "only {} cases", cases.len());
    let names: BTreeSet<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), cases.len(), "case names must be unique");
    for case in &cases {
        assert!(
            !case.change.trim().is_empty() && !case.category.trim().is_empty(),
            "case `{}` needs a category and a change",
            case.name
        );
        let unknown: Vec<&String> = case
            .expected
            .keys()
            .filter(|k| k.parse::<Mode>().is_err())
            .collect();
        assert!(
            unknown.is_empty(),
            "case `{}`: unknown modes {unknown:?}",
            case.name
        );
    }
    let differing = cases
        .iter()
        .filter(|c| {
            [
                (Mode::Backward, Mode::BackwardTransitive),
                (Mode::Forward, Mode::ForwardTransitive),
                (Mode::Full, Mode::FullTransitive),
            ]
            .into_iter()
            .any(|(latest, all)| c.expected(latest) != c.expected(all))
        })
        .count();
    assert!(
        differing >= 8,
        "only {differing} cases where transitive and latest-only verdicts differ"
    );
}

/// The cases as a Markdown table, one row each.
fn render_table(cases: &[Case]) -> String {
    let mut out = String::from("| Case | Category | Change |");
    for mode in Mode::ALL {
        out.push_str(&format!(" {} |", mode.as_str()));
    }
    out.push_str("\n|---|---|---|");
    for _ in Mode::ALL {
        out.push_str(":-:|");
    }
    out.push('\n');
    for case in cases {
        out.push_str(&format!(
            "| {} | {} | {} |",
            cell(&case.name),
            cell(&case.category),
            cell(&case.change)
        ));
        for mode in Mode::ALL {
            let mark = match case.expected(mode) {
                Ok(true) => "✓",
                Ok(false) => "✗",
                Err(_) => "?",
            };
            out.push_str(&format!(" {mark} |"));
        }
        out.push('\n');
    }
    out
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[test]
fn the_docs_table_matches_the_cases() {
    let path = manifest_path("../../docs/schema-compatibility.md");
    let doc = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let (Some(begin), Some(end)) = (doc.find(BEGIN), doc.find(END)) else {
        panic!("{} lacks the markers {BEGIN} and {END}", path.display());
    };
    assert!(
        begin < end,
        "{}: {END} comes before {BEGIN}",
        path.display()
    );
    let current = &doc[begin + BEGIN.len()..end];
    let wanted = format!("\n{}", render_table(&cases()));
    if current == wanted {
        return;
    }
    if std::env::var_os("SLUICE_BLESS").is_some_and(|v| v == "1") {
        let updated = format!("{}{wanted}{}", &doc[..begin + BEGIN.len()], &doc[end..]);
        std::fs::write(&path, updated)
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        return;
    }
    let first_difference = current
        .lines()
        .zip(wanted.lines())
        .enumerate()
        .find(|(_, (a, b))| a != b)
        .map(|(n, (a, b))| {
            format!("first difference at table line {n}:\n  docs:  {a}\n  cases: {b}")
        })
        .unwrap_or_else(|| "the tables differ in length".to_owned());
    panic!(
        "{} is out of date with tests/cases.json; {first_difference}\n\
         rerun with SLUICE_BLESS=1 to rewrite the table",
        path.display()
    );
}

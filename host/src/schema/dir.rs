//! The schema repository on disk: one directory per event type,
//!
//! ```text
//! schemas/
//!   order.created/
//!     type.toml     owner, description, compatibility (default BACKWARD)
//!     1.json        JSON Schema 2020-12, version 1 (its `examples` are example events' data)
//!     2.json
//! ```
//!
//! Reading it names the file and what is wrong with it; nothing here judges
//! compatibility (that is `sluice_schema`) or stores anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use sluice_schema::Mode;

/// `type.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeMeta {
    /// Who answers for the type (a team, an address).
    pub owner: String,
    /// What the event means.
    pub description: String,
    /// How new versions must relate to earlier ones.
    #[serde(default = "backward")]
    pub compatibility: String,
}

fn backward() -> String {
    "BACKWARD".into()
}

/// One event type as the directory has it.
#[derive(Debug, Clone)]
pub struct TypeDir {
    pub name: String,
    pub dir: PathBuf,
    pub meta: TypeMeta,
    pub mode: Mode,
    /// Version number -> schema.
    pub versions: BTreeMap<u32, Value>,
}

/// A problem with a file of the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

/// Every type under `root`, and the problems of what could not be read
/// (a type with a problem in its `type.toml` is left out; a version file
/// with one is left out of its type).
pub fn read(root: &Path) -> (Vec<TypeDir>, Vec<Problem>) {
    let mut types = Vec::new();
    let mut problems = Vec::new();
    let problem = |path: &Path, message: String| Problem {
        path: path.to_path_buf(),
        message,
    };
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) => {
            problems.push(problem(
                root,
                format!("cannot read the schema directory: {e}"),
            ));
            return (types, problems);
        }
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if let Err(why) = valid_type_name(&name) {
            problems.push(problem(&dir, why));
            continue;
        }
        let meta_path = dir.join("type.toml");
        let meta: TypeMeta = match std::fs::read_to_string(&meta_path)
            .map_err(|e| e.to_string())
            .and_then(|t| toml::from_str(&t).map_err(|e| e.to_string()))
        {
            Ok(m) => m,
            Err(e) => {
                problems.push(problem(&meta_path, e));
                continue;
            }
        };
        let mode = match meta.compatibility.parse::<Mode>() {
            Ok(m) => m,
            Err(e) => {
                problems.push(problem(&meta_path, format!("compatibility: {e}")));
                continue;
            }
        };
        let mut versions = BTreeMap::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|e| e.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for f in files
            .iter()
            .filter(|f| f.extension().is_some_and(|x| x == "json"))
        {
            let stem = f.file_stem().unwrap_or_default().to_string_lossy();
            let Ok(v) = stem.parse::<u32>() else {
                problems.push(problem(
                    f,
                    "a schema file is named by its version: 1.json, 2.json, ...".into(),
                ));
                continue;
            };
            if v == 0 {
                problems.push(problem(f, "versions start at 1".into()));
                continue;
            }
            match std::fs::read(f)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()))
            {
                Ok(schema) => {
                    versions.insert(v, schema);
                }
                Err(e) => problems.push(problem(f, format!("not JSON: {e}"))),
            }
        }
        if versions.is_empty() {
            problems.push(problem(&dir, "no version (1.json, 2.json, ...)".into()));
            continue;
        }
        types.push(TypeDir {
            name,
            dir,
            meta,
            mode,
            versions,
        });
    }
    (types, problems)
}

/// An event type's name: `<domain>.<entity>.<past-tense verb>` in lowercase
/// letters, digits and `-` (ADR 0009); at least two dot-separated parts.
pub fn valid_type_name(name: &str) -> Result<(), String> {
    let parts: Vec<&str> = name.split('.').collect();
    let ok = parts.len() >= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not an event type name: <domain>.<entity>.<past-tense-verb>, lowercase letters, digits and `-`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_is_read_and_its_problems_named() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("order.created");
        std::fs::create_dir_all(&t).unwrap();
        std::fs::write(
            t.join("type.toml"),
            "owner = \"orders\"\ndescription = \"An order was placed.\"\n",
        )
        .unwrap();
        std::fs::write(t.join("1.json"), r#"{"type":"object"}"#).unwrap();
        std::fs::write(t.join("2.json"), "{not json").unwrap();
        std::fs::write(t.join("latest.json"), "{}").unwrap();
        let bad = d.path().join("Orders");
        std::fs::create_dir_all(&bad).unwrap();
        let (types, problems) = read(d.path());
        assert_eq!(types.len(), 1);
        assert_eq!(types[0].mode, Mode::Backward);
        assert_eq!(types[0].versions.keys().copied().collect::<Vec<_>>(), [1]);
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 3, "{text:?}");
        assert!(
            text.iter().any(|p| p.contains("2.json: not JSON")),
            "{text:?}"
        );
        assert!(text.iter().any(|p| p.contains("latest.json")), "{text:?}");
        assert!(
            text.iter()
                .any(|p| p.contains("`Orders` is not an event type name")),
            "{text:?}"
        );
    }
}

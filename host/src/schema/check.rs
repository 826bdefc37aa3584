//! `sluice schema check`: what CI runs on a schema repository, offline.
//!
//! 1. Lint: every type has an owner and a description; every version is a
//!    valid JSON Schema 2020-12 that decides `additionalProperties` for
//!    every object it describes, and has `examples` that validate.
//! 2. Compatibility: each version against the earlier ones, as the type's
//!    mode says.
//! 3. Against a baseline (a git ref, a directory, or what a running host has
//!    registered): a version the baseline has is neither changed nor removed.
//! 4. Contracts: every given manifest's `[[consumes]]` and `[[produces]]`
//!    against the schemas of the tree.
//!
//! Each problem is one line naming the file or the module; any problem
//! fails the check.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::dir::{self, TypeDir};

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The file, type or module it is about.
    pub at: String,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// What to check.
pub struct Options {
    /// The schema repository.
    pub dir: PathBuf,
    /// The repository as it was: a directory, `git:<ref>` (read with
    /// `git archive` from the repository `dir` is in), or a running host's
    /// API address (`http://127.0.0.1:7070`: what it has registered).
    pub against: Option<String>,
    /// Module directories (or `module.toml` files) whose contracts to check.
    pub manifests: Vec<PathBuf>,
}

/// Run every check; the findings, and how many types and versions were read.
pub fn run(o: &Options) -> anyhow::Result<(Vec<Finding>, usize, usize)> {
    let (types, problems) = dir::read(&o.dir);
    let mut out: Vec<Finding> = problems
        .into_iter()
        .map(|p| Finding {
            at: p.path.display().to_string(),
            message: p.message,
        })
        .collect();
    for t in &types {
        out.extend(lint(t));
        out.extend(compatibility(t));
    }
    if let Some(against) = &o.against {
        let (base, _tmp) = baseline(&o.dir, against)?;
        let (before, _) = dir::read(&base);
        out.extend(released(&before, &types));
    }
    let schemas = |ty: &str| -> Option<BTreeMap<u32, Value>> {
        types
            .iter()
            .find(|t| t.name == ty)
            .map(|t| t.versions.clone())
    };
    for m in &o.manifests {
        let file = if m.is_dir() {
            m.join("module.toml")
        } else {
            m.clone()
        };
        match crate::config::Manifest::load(&file) {
            Ok(manifest) => {
                for p in super::contract::problems(
                    &manifest.name,
                    &manifest.consumes,
                    &manifest.produces,
                    &schemas,
                ) {
                    out.push(Finding {
                        at: file.display().to_string(),
                        message: p,
                    });
                }
            }
            Err(e) => out.push(Finding {
                at: file.display().to_string(),
                message: format!("{e:#}"),
            }),
        }
    }
    let versions = types.iter().map(|t| t.versions.len()).sum();
    Ok((out, types.len(), versions))
}

fn at(t: &TypeDir, v: u32) -> String {
    t.dir.join(format!("{v}.json")).display().to_string()
}

/// The lint rules of one type.
fn lint(t: &TypeDir) -> Vec<Finding> {
    let mut out = Vec::new();
    let meta = t.dir.join("type.toml").display().to_string();
    if t.meta.owner.trim().is_empty() {
        out.push(Finding {
            at: meta.clone(),
            message: "`owner` is empty: name who answers for the type".into(),
        });
    }
    if t.meta.description.trim().is_empty() {
        out.push(Finding {
            at: meta,
            message: "`description` is empty: say what the event means".into(),
        });
    }
    for (v, schema) in &t.versions {
        let validator = match super::compile(schema) {
            Ok(val) => val,
            Err(e) => {
                out.push(Finding {
                    at: at(t, *v),
                    message: e,
                });
                continue;
            }
        };
        let mut open = Vec::new();
        undecided(schema, "", &mut open);
        for path in open {
            out.push(Finding {
                at: at(t, *v),
                message: format!(
                    "the object at `{}` does not decide `additionalProperties` (say `false` for a closed model, `true` for an open one)",
                    if path.is_empty() { "/" } else { &path }
                ),
            });
        }
        match schema.get("examples").and_then(Value::as_array) {
            Some(examples) if !examples.is_empty() => {
                for (i, ex) in examples.iter().enumerate() {
                    for e in validator.iter_errors(ex).take(5) {
                        out.push(Finding {
                            at: at(t, *v),
                            message: format!(
                                "example {i} is not valid at `{}`: {e}",
                                e.instance_path()
                            ),
                        });
                    }
                }
            }
            _ => out.push(Finding {
                at: at(t, *v),
                message: "no `examples`: give at least one example event's data".into(),
            }),
        }
    }
    out
}

/// Paths of object schemas under `s` that leave `additionalProperties`
/// (or `unevaluatedProperties`) unsaid.
fn undecided(s: &Value, path: &str, out: &mut Vec<String>) {
    let Some(o) = s.as_object() else { return };
    let is_object = o.get("type").is_some_and(|t| {
        t == "object"
            || t.as_array()
                .is_some_and(|a| a.iter().any(|x| x == "object"))
    }) || o.contains_key("properties");
    if is_object
        && !o.contains_key("additionalProperties")
        && !o.contains_key("unevaluatedProperties")
        && !o.contains_key("$ref")
    {
        out.push(path.to_string());
    }
    for key in ["properties", "$defs", "definitions", "patternProperties"] {
        if let Some(props) = o.get(key).and_then(Value::as_object) {
            for (name, sub) in props {
                undecided(sub, &format!("{path}/{key}/{}", escape(name)), out);
            }
        }
    }
    for key in ["items", "additionalProperties", "not", "contains"] {
        if let Some(sub) = o.get(key) {
            undecided(sub, &format!("{path}/{key}"), out);
        }
    }
    for key in ["oneOf", "anyOf", "allOf", "prefixItems"] {
        if let Some(list) = o.get(key).and_then(Value::as_array) {
            for (i, sub) in list.iter().enumerate() {
                undecided(sub, &format!("{path}/{key}/{i}"), out);
            }
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Each version against the earlier ones of the same type.
fn compatibility(t: &TypeDir) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut previous: Vec<(String, Value)> = Vec::new();
    for (v, schema) in &t.versions {
        for c in sluice_schema::check(t.mode, schema, &previous) {
            out.push(Finding {
                at: at(t, *v),
                message: format!(
                    "breaks {} compatibility{} at `{}`: {}",
                    t.mode.as_str(),
                    c.against
                        .as_deref()
                        .map(|a| format!(" with version {a}"))
                        .unwrap_or_default(),
                    c.path,
                    c.message
                ),
            });
        }
        previous.push((v.to_string(), schema.clone()));
    }
    out
}

/// Versions the baseline released must stay as they were.
fn released(before: &[TypeDir], now: &[TypeDir]) -> Vec<Finding> {
    let mut out = Vec::new();
    for b in before {
        let n = now.iter().find(|t| t.name == b.name);
        for (v, schema) in &b.versions {
            match n.and_then(|t| t.versions.get(v)) {
                None => out.push(Finding {
                    at: b.name.clone(),
                    message: format!(
                        "version {v} was released and is gone: versions are never removed"
                    ),
                }),
                Some(s) if s != schema => out.push(Finding {
                    at: n.map(|t| at(t, *v)).unwrap_or_default(),
                    message: format!(
                        "version {v} was released and has changed: a change is a new version"
                    ),
                }),
                Some(_) => {}
            }
        }
    }
    out
}

/// The baseline's schema directory: `against` itself, or the same
/// directory at a git ref, extracted into a temporary directory.
fn baseline(dir: &Path, against: &str) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    if against.starts_with("http://") || against.starts_with("https://") {
        return registered(against);
    }
    let Some(rev) = against.strip_prefix("git:") else {
        return Ok((PathBuf::from(against), None));
    };
    let abs = dir
        .canonicalize()
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let top = std::process::Command::new("git")
        .arg("-C")
        .arg(&abs)
        .args(["rev-parse", "--show-toplevel"])
        .output()?;
    anyhow::ensure!(
        top.status.success(),
        "{} is not in a git repository: {}",
        dir.display(),
        String::from_utf8_lossy(&top.stderr).trim()
    );
    let top = PathBuf::from(String::from_utf8(top.stdout)?.trim());
    let rel = abs
        .strip_prefix(&top)
        .unwrap_or(Path::new(""))
        .to_path_buf();
    let tmp = tempfile::tempdir()?;
    let archive = std::process::Command::new("git")
        .arg("-C")
        .arg(&top)
        .args(["archive", "--format=tar", rev, "--"])
        .arg(if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &rel
        })
        .output()?;
    if !archive.status.success() {
        let why = String::from_utf8_lossy(&archive.stderr);
        // A directory the ref does not have yet: nothing was released.
        if why.contains("did not match any files") {
            return Ok((tmp.path().join("none"), Some(tmp)));
        }
        anyhow::bail!("git archive {rev}: {}", why.trim());
    }
    let mut tar = std::process::Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(tmp.path())
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    {
        use std::io::Write as _;
        tar.stdin
            .take()
            .expect("piped")
            .write_all(&archive.stdout)?;
    }
    anyhow::ensure!(tar.wait()?.success(), "tar could not unpack the baseline");
    Ok((tmp.path().join(rel), Some(tmp)))
}

/// What the host at `addr` has registered (`GET /v1/schemas`), written out
/// as a schema directory.
fn registered(addr: &str) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    let url = format!("{}/v1/schemas", addr.trim_end_matches('/'));
    let mut req = ureq::get(&url);
    if let Ok(token) = std::env::var("SLUICE_API_TOKEN")
        && !token.trim().is_empty()
    {
        req = req.set("Authorization", &format!("Bearer {}", token.trim()));
    }
    let summary: super::Summary = req
        .call()
        .map_err(|e| anyhow::anyhow!("cannot read the schemas of {addr}: {e}"))?
        .into_json()?;
    let tmp = tempfile::tempdir()?;
    for t in &summary.types {
        let d = tmp.path().join(&t.name);
        std::fs::create_dir_all(&d)?;
        let mut meta = toml::Table::new();
        meta.insert("owner".into(), t.owner.clone().into());
        meta.insert("description".into(), t.description.clone().into());
        meta.insert("compatibility".into(), t.compatibility.clone().into());
        std::fs::write(d.join("type.toml"), toml::to_string(&meta)?)?;
        for v in &t.versions {
            std::fs::write(d.join(format!("{}.json", v.version)), v.schema.to_string())?;
        }
    }
    Ok((tmp.path().to_path_buf(), Some(tmp)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn write_type(root: &Path, name: &str, versions: &[Value]) {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("type.toml"),
            "owner = \"team\"\ndescription = \"d\"\n",
        )
        .unwrap();
        for (i, v) in versions.iter().enumerate() {
            std::fs::write(d.join(format!("{}.json", i + 1)), v.to_string()).unwrap();
        }
    }

    fn schema(amount: &str) -> Value {
        json!({"type": "object", "additionalProperties": false,
               "properties": {"amount": {"type": amount}}, "required": ["amount"],
               "examples": [{"amount": 3}]})
    }

    #[test]
    fn a_clean_repository_passes_and_a_breaking_change_is_named() {
        let d = tempfile::tempdir().unwrap();
        write_type(
            d.path(),
            "order.created",
            &[schema("integer"), schema("number")],
        );
        let o = Options {
            dir: d.path().into(),
            against: None,
            manifests: vec![],
        };
        let (f, types, versions) = run(&o).unwrap();
        assert!(f.is_empty(), "{f:?}");
        assert_eq!((types, versions), (1, 2));
        write_type(
            d.path(),
            "order.created",
            &[schema("integer"), schema("number"), schema("string")],
        );
        let (f, _, _) = run(&o).unwrap();
        assert_eq!(f.len(), 2, "{f:?}"); // the type change, and the example no longer valid
        assert!(
            f.iter()
                .any(|x| x.at.ends_with("3.json") && x.message.contains("BACKWARD")),
            "{f:?}"
        );
    }

    #[test]
    fn lint_names_open_objects_and_missing_examples() {
        let d = tempfile::tempdir().unwrap();
        write_type(
            d.path(),
            "order.created",
            &[json!({"type": "object", "properties": {"line": {"type": "object"}}})],
        );
        let (f, _, _) = run(&Options {
            dir: d.path().into(),
            against: None,
            manifests: vec![],
        })
        .unwrap();
        let text: Vec<String> = f.iter().map(ToString::to_string).collect();
        assert_eq!(f.len(), 3, "{text:?}");
        assert!(
            text.iter().any(|t| t.contains("`/` does not decide")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("`/properties/line` does not decide")),
            "{text:?}"
        );
        assert!(text.iter().any(|t| t.contains("no `examples`")), "{text:?}");
    }

    #[test]
    fn a_released_version_may_not_change_or_go() {
        let before = tempfile::tempdir().unwrap();
        let now = tempfile::tempdir().unwrap();
        write_type(
            before.path(),
            "order.created",
            &[schema("integer"), schema("number")],
        );
        let mut changed = schema("integer");
        changed["description"] = "edited".into();
        write_type(now.path(), "order.created", &[changed]);
        let (f, _, _) = run(&Options {
            dir: now.path().into(),
            against: Some(before.path().display().to_string()),
            manifests: vec![],
        })
        .unwrap();
        let text: Vec<String> = f.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("version 1 was released and has changed")),
            "{text:?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("version 2 was released and is gone")),
            "{text:?}"
        );
    }
}

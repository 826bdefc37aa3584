//! What the Confluent-compatible registry API asks of the registry: a
//! subject is an event type; registering through the API adds the next
//! version (or answers the id of an identical one), under the same checks
//! as the schema directory (compatibility, deployed contracts).

use std::sync::Arc;

use serde_json::Value;
use sluice_schema::Mode;

use super::{RegisterError, Registered, Registry, Version, dir::TypeMeta};

/// A subject or version the API asked for that is not there.
#[derive(Debug, thiserror::Error)]
pub enum Missing {
    #[error("Subject '{0}' not found.")]
    Subject(String),
    #[error("Version {1} not found for subject '{0}'.")]
    Version(String, String),
}

/// `latest`, `-1` or a version number.
fn pick(t: &Registered, v: &str) -> Result<Arc<Version>, Missing> {
    let found = match v {
        "latest" | "-1" => t.versions.values().next_back().cloned(),
        n => n
            .parse::<u32>()
            .ok()
            .and_then(|n| t.versions.get(&n).cloned()),
    };
    found.ok_or_else(|| Missing::Version(t.name.clone(), v.into()))
}

const DEFAULT_MODE: &str = "schema.default-compatibility";

impl Registry {
    /// The subject's type, or why not.
    pub fn subject(&self, s: &str) -> Result<Arc<Registered>, Missing> {
        self.get(s).ok_or_else(|| Missing::Subject(s.into()))
    }

    /// Version `v` (`latest` or a number) of subject `s`.
    pub fn subject_version(&self, s: &str, v: &str) -> Result<Arc<Version>, Missing> {
        pick(&*self.subject(s)?, v)
    }

    /// The version of `s` whose schema is `schema`, if registered.
    pub fn lookup(&self, s: &str, schema: &Value) -> Result<Option<Arc<Version>>, Missing> {
        let t = self.subject(s)?;
        Ok(t.versions.values().find(|v| &v.schema == schema).cloned())
    }

    /// Register `schema` as the next version of `s` (an identical one is
    /// answered as it is). A new subject gets the default mode.
    pub fn register_next(&self, s: &str, schema: Value) -> Result<Arc<Version>, RegisterError> {
        let current = self.get(s);
        if let Some(t) = &current
            && let Some(v) = t.versions.values().find(|v| v.schema == schema)
        {
            return Ok(v.clone());
        }
        let (meta, mode, next) = match &current {
            Some(t) => (
                TypeMeta {
                    owner: t.owner.clone(),
                    description: t.description.clone(),
                    compatibility: t.mode.as_str().into(),
                },
                t.mode,
                t.versions.keys().next_back().map_or(1, |v| v + 1),
            ),
            None => {
                let mode = self.default_mode();
                (
                    TypeMeta {
                        owner: "unknown (registered through the API)".into(),
                        description: String::new(),
                        compatibility: mode.as_str().into(),
                    },
                    mode,
                    1,
                )
            }
        };
        let t = self.register(s, &meta, mode, next, schema)?;
        Ok(t.versions[&next].clone())
    }

    /// Why `schema` could not be registered after version `v` of `s` (the
    /// subject's mode; deployed contracts too): empty when it could.
    pub fn incompatibilities(
        &self,
        s: &str,
        v: &str,
        schema: &Value,
    ) -> Result<Vec<String>, Missing> {
        let t = self.subject(s)?;
        let upto = pick(&t, v)?.version;
        let previous: Vec<(String, Value)> = t
            .versions
            .range(..=upto)
            .map(|(n, v)| (n.to_string(), v.schema.clone()))
            .collect();
        let mut out: Vec<String> = sluice_schema::check(t.mode, schema, &previous)
            .iter()
            .map(ToString::to_string)
            .collect();
        for (module, changes) in self.broken_consumers(s, schema) {
            out.extend(
                changes
                    .iter()
                    .map(|b| format!("breaks the contract of module `{module}`: {b}")),
            );
        }
        Ok(out)
    }

    /// The mode new subjects get (`PUT /config`; default BACKWARD).
    pub fn default_mode(&self) -> Mode {
        self.store
            .meta_get(DEFAULT_MODE)
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok()?.parse().ok())
            .unwrap_or(Mode::Backward)
    }

    /// Set the mode new subjects get.
    pub fn set_default_mode(&self, mode: Mode) -> Result<(), RegisterError> {
        self.store
            .meta_put(DEFAULT_MODE, mode.as_str().as_bytes())
            .map_err(|e| RegisterError::Store(e.to_string()))
    }

    /// Set the mode of subject `s` (kept with its history).
    pub fn set_mode(&self, s: &str, mode: Mode) -> Result<(), RegisterError> {
        let _w = self.writing.lock().unwrap();
        let t = self
            .get(s)
            .ok_or_else(|| RegisterError::Invalid(Missing::Subject(s.into()).to_string()))?;
        let updated = Arc::new(Registered {
            name: t.name.clone(),
            owner: t.owner.clone(),
            description: t.description.clone(),
            mode,
            versions: t.versions.clone(),
        });
        self.store_type(&updated)?;
        self.types.write().unwrap().insert(s.into(), updated);
        Ok(())
    }
}

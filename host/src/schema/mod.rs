//! Event governance: the host's schema registry.
//!
//! Event types have versioned JSON Schemas (2020-12) with an owner, a
//! description and a compatibility mode. Versions come from the schema
//! directory ([`dir`], read at start and again every few seconds) and are
//! kept in RocksDB with their history once registered (`meta` family,
//! `schema/<type>`), so a version once registered never changes and a
//! deleted file does not unregister anything.
//!
//! A new version is registered only if it is compatible with the earlier
//! ones as the type's mode says (`sluice_schema::check`), and if no
//! deployed module's contract for the type would break ([`contract`]);
//! else it is refused, each breaking change named with its path.
//!
//! Events whose `type` has a schema are validated against the version their
//! `dataschema` names, else the latest: at HTTP ingest (a topic's policy
//! `reject` answers 400), when a module reads them (`reject` and
//! `dead-letter` dead-letter them with class `schema`; `warn` logs and lets
//! them through) and when a module emits them (an invalid output fails its
//! event with class `schema`). Compiled validators are kept per version;
//! they read events' data as a [`tape`], not as `serde_json::Value`s (a
//! key twice in one object is refused: which value counts is undefined),
//! and an output forwarding its input's bytes under the same schema but
//! for annotations is not read again ([`Registry::validate_output`]).

pub mod api;
pub mod catalog;
pub mod check;
pub mod contract;
pub mod dir;
pub mod tape;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_schema::{Incompatibility, Mode};

use crate::state::Store;
use crate::telemetry::Telemetry;

/// What a topic does with an event that fails its schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// HTTP ingest answers 400; a module reading it dead-letters it.
    #[default]
    Reject,
    /// Accepted at ingest; a module reading it dead-letters it.
    DeadLetter,
    /// Logged and counted, processed as if valid.
    Warn,
}

/// Where an event was checked (the `stage` label of the failure counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Ingest,
    Input,
    Output,
}

impl Stage {
    fn as_str(self) -> &'static str {
        match self {
            Stage::Ingest => "ingest",
            Stage::Input => "input",
            Stage::Output => "output",
        }
    }
}

/// One reason an event is not valid: where in its data, and what.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer into the event's data (`""` is the whole of it).
    pub pointer: String,
    pub message: String,
}

/// The outcome of validating one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Its type has no schema.
    Unchecked,
    Valid {
        version: u32,
        /// The version's registry-wide id.
        id: u64,
    },
    Invalid {
        version: Option<u32>,
        violations: Vec<Violation>,
    },
}

impl Verdict {
    /// `None` when valid or unchecked; else the reason as one line of JSON
    /// (`{"type":..,"version":..,"violations":[{"pointer":..,"message":..}]}`).
    pub fn reason(&self, ty: &str) -> Option<String> {
        let Verdict::Invalid {
            version,
            violations,
        } = self
        else {
            return None;
        };
        Some(
            serde_json::json!({"type": ty, "version": version, "violations": violations})
                .to_string(),
        )
    }
}

/// An input event that passed its type's schema: the version's id, and
/// the data (an output carrying the same bytes need not be read again; see
/// [`Registry::validate_output`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    pub schema: u64,
    pub data: Vec<u8>,
}

/// One registered version.
#[derive(Debug)]
pub struct Version {
    pub version: u32,
    /// Registry-wide id (the Confluent-style schema id).
    pub id: u64,
    pub schema: Value,
    /// Compiled for events' data as [`tape`] reads it.
    validator: jsonschema::Validator<tape::TapeJson>,
}

/// One event type with its registered versions.
#[derive(Debug)]
pub struct Registered {
    pub name: String,
    pub owner: String,
    pub description: String,
    pub mode: Mode,
    pub versions: BTreeMap<u32, Arc<Version>>,
}

/// `GET /v1/schemas`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub types: Vec<TypeSummary>,
    /// Schema files not registered, with the reason.
    pub refused: BTreeMap<String, String>,
}

/// One registered type.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TypeSummary {
    pub name: String,
    pub owner: String,
    pub description: String,
    pub compatibility: String,
    pub versions: Vec<VersionSummary>,
}

/// One registered version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionSummary {
    pub version: u32,
    pub id: u64,
    pub schema: Value,
}

/// How a type is stored (`meta` family, `schema/<type>`).
#[derive(Serialize, Deserialize)]
struct Stored {
    owner: String,
    description: String,
    compatibility: String,
    versions: Vec<StoredVersion>,
}

#[derive(Serialize, Deserialize)]
struct StoredVersion {
    version: u32,
    id: u64,
    schema: Value,
}

/// Why a version was not registered.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("{0}")]
    Invalid(String),
    #[error("version {version} of `{ty}` breaks {mode} compatibility: {}", list(.changes))]
    Incompatible {
        ty: String,
        version: u32,
        mode: &'static str,
        changes: Vec<Incompatibility>,
    },
    #[error("version {version} of `{ty}` breaks the contract of module `{module}`: {}", list(.changes))]
    BreaksConsumer {
        ty: String,
        version: u32,
        module: String,
        changes: Vec<Incompatibility>,
    },
    #[error("the schema store failed: {0}")]
    Store(String),
}

/// Changes as one line: `path: message; path: message`.
pub fn list(changes: &[Incompatibility]) -> String {
    changes
        .iter()
        .map(|c| match &c.against {
            Some(v) => format!("{} (against version {v}): {}", c.path, c.message),
            None => format!("{}: {}", c.path, c.message),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The host's schema registry.
pub struct Registry {
    store: Arc<Store>,
    dir: Option<PathBuf>,
    telemetry: Arc<Telemetry>,
    types: RwLock<BTreeMap<String, Arc<Registered>>>,
    /// What the directory holds that was refused, by file: logged once.
    refused: Mutex<BTreeMap<String, String>>,
    /// Deployed modules' contracts, by module.
    consumers: RwLock<BTreeMap<String, Vec<contract::Consumes>>>,
    /// Serializes registrations (ids, history).
    writing: Mutex<()>,
    /// Whether two versions (by id) are the same schema but for
    /// annotations: decided once per pair (versions never change).
    same: RwLock<std::collections::HashMap<(u64, u64), bool>>,
    default_policy: Policy,
    policies: BTreeMap<String, Policy>,
}

const PREFIX: &str = "schema/";
const NEXT_ID: &str = "schema.next-id";

impl Registry {
    /// The registry of `store`, then what `dir` adds.
    pub fn open(
        store: Arc<Store>,
        dir: Option<PathBuf>,
        telemetry: Arc<Telemetry>,
        default_policy: Policy,
        policies: BTreeMap<String, Policy>,
    ) -> anyhow::Result<Registry> {
        let mut types = BTreeMap::new();
        for (key, bytes) in store.meta_scan(PREFIX)? {
            let name = key[PREFIX.len()..].to_string();
            let stored: Stored = serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("stored schemas of `{name}` are unreadable: {e}"))?;
            types.insert(name.clone(), Arc::new(registered(&name, stored)?));
        }
        let r = Registry {
            store,
            dir,
            telemetry,
            types: RwLock::new(types),
            refused: Mutex::default(),
            consumers: RwLock::default(),
            writing: Mutex::default(),
            same: RwLock::default(),
            default_policy,
            policies,
        };
        r.sync_dir();
        Ok(r)
    }

    /// A registry with nothing in it (tests, tools).
    pub fn empty(store: Arc<Store>) -> Registry {
        Registry {
            store,
            dir: None,
            telemetry: Arc::new(Telemetry::off()),
            types: RwLock::default(),
            refused: Mutex::default(),
            consumers: RwLock::default(),
            writing: Mutex::default(),
            same: RwLock::default(),
            default_policy: Policy::default(),
            policies: BTreeMap::new(),
        }
    }

    /// Register what is new in the schema directory; log (once per file)
    /// what is refused. Returns the refusals now standing.
    pub fn sync_dir(&self) -> BTreeMap<String, String> {
        let Some(root) = &self.dir else {
            return BTreeMap::new();
        };
        let (types, problems) = dir::read(root);
        let mut now = BTreeMap::new();
        for p in problems {
            now.insert(p.path.display().to_string(), p.message);
        }
        for t in types {
            for (v, schema) in &t.versions {
                let file = t.dir.join(format!("{v}.json")).display().to_string();
                if let Err(e) = self.register(&t.name, &t.meta, t.mode, *v, schema.clone()) {
                    now.insert(file, e.to_string());
                }
            }
        }
        let mut refused = self.refused.lock().unwrap();
        for (file, why) in &now {
            if refused.get(file) != Some(why) {
                tracing::error!(file = %file, "schema not registered: {why}");
            }
        }
        *refused = now.clone();
        now
    }

    /// Register version `version` of `ty`. Registering the same schema again
    /// is a no-op.
    pub fn register(
        &self,
        ty: &str,
        meta: &dir::TypeMeta,
        mode: Mode,
        version: u32,
        schema: Value,
    ) -> Result<Arc<Registered>, RegisterError> {
        let _w = self.writing.lock().unwrap();
        dir::valid_type_name(ty).map_err(RegisterError::Invalid)?;
        let current = self.get(ty);
        if let Some(cur) = &current
            && let Some(v) = cur.versions.get(&version)
        {
            if v.schema == schema {
                return Ok(cur.clone());
            }
            return Err(RegisterError::Invalid(format!(
                "version {version} of `{ty}` is registered with another schema; a change is a new version"
            )));
        }
        if let Some(cur) = &current
            && let Some(last) = cur.versions.keys().next_back()
            && version < *last
        {
            return Err(RegisterError::Invalid(format!(
                "`{ty}` has version {last}; a new version must come after it, not {version}"
            )));
        }
        let validator = compile_for(&schema)
            .map_err(|e| RegisterError::Invalid(format!("version {version} of `{ty}`: {e}")))?;
        let previous: Vec<(String, Value)> = current
            .iter()
            .flat_map(|c| c.versions.values())
            .map(|v| (v.version.to_string(), v.schema.clone()))
            .collect();
        let changes = sluice_schema::check(mode, &schema, &previous);
        if !changes.is_empty() {
            return Err(RegisterError::Incompatible {
                ty: ty.into(),
                version,
                mode: mode.as_str(),
                changes,
            });
        }
        if let Some((module, changes)) = self.broken_consumers(ty, &schema).into_iter().next() {
            return Err(RegisterError::BreaksConsumer {
                ty: ty.into(),
                version,
                module,
                changes,
            });
        }
        let id = self
            .next_id()
            .map_err(|e| RegisterError::Store(e.to_string()))?;
        let mut versions = current
            .as_ref()
            .map(|c| c.versions.clone())
            .unwrap_or_default();
        versions.insert(
            version,
            Arc::new(Version {
                version,
                id,
                schema,
                validator,
            }),
        );
        let reg = Arc::new(Registered {
            name: ty.into(),
            owner: meta.owner.clone(),
            description: meta.description.clone(),
            mode,
            versions,
        });
        self.store_type(&reg)?;
        self.types.write().unwrap().insert(ty.into(), reg.clone());
        tracing::info!(r#type = ty, version, id, "schema registered");
        Ok(reg)
    }

    /// Each deployed module whose contract for `ty` `schema` would break,
    /// with what breaks: every consumer of the type, since a new version is
    /// what producers will write, whichever versions the module listed.
    fn broken_consumers(&self, ty: &str, schema: &Value) -> Vec<(String, Vec<Incompatibility>)> {
        let consumers = self.consumers.read().unwrap();
        consumers
            .iter()
            .flat_map(|(module, consumes)| {
                consumes
                    .iter()
                    .filter(|c| c.ty == ty)
                    .map(|c| (module.clone(), c.broken_by(schema)))
            })
            .filter(|(_, changes)| !changes.is_empty())
            .collect()
    }

    /// Write `reg` with its whole history.
    fn store_type(&self, reg: &Registered) -> Result<(), RegisterError> {
        let stored = Stored {
            owner: reg.owner.clone(),
            description: reg.description.clone(),
            compatibility: reg.mode.as_str().into(),
            versions: reg
                .versions
                .values()
                .map(|v| StoredVersion {
                    version: v.version,
                    id: v.id,
                    schema: v.schema.clone(),
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&stored).map_err(|e| RegisterError::Store(e.to_string()))?;
        self.store
            .meta_put(&format!("{PREFIX}{}", reg.name), &bytes)
            .map_err(|e| RegisterError::Store(e.to_string()))
    }

    fn next_id(&self) -> Result<u64, crate::state::StoreError> {
        let id = self
            .store
            .meta_get(NEXT_ID)?
            .and_then(|b| String::from_utf8(b).ok()?.parse().ok())
            .unwrap_or(1);
        self.store
            .meta_put(NEXT_ID, (id + 1).to_string().as_bytes())?;
        Ok(id)
    }

    /// What `GET /v1/schemas` shows.
    pub fn summary(&self) -> Summary {
        Summary {
            types: self
                .types()
                .iter()
                .map(|t| TypeSummary {
                    name: t.name.clone(),
                    owner: t.owner.clone(),
                    description: t.description.clone(),
                    compatibility: t.mode.as_str().into(),
                    versions: t
                        .versions
                        .values()
                        .map(|v| VersionSummary {
                            version: v.version,
                            id: v.id,
                            schema: v.schema.clone(),
                        })
                        .collect(),
                })
                .collect(),
            refused: self.refused.lock().unwrap().clone(),
        }
    }

    /// Whether the host governs its events: a schema directory is
    /// configured or a type is registered. A host that does not checks no
    /// contracts.
    pub fn governed(&self) -> bool {
        self.dir.is_some() || !self.types.read().unwrap().is_empty()
    }

    /// One type.
    pub fn get(&self, ty: &str) -> Option<Arc<Registered>> {
        self.types.read().unwrap().get(ty).cloned()
    }

    /// Every type.
    pub fn types(&self) -> Vec<Arc<Registered>> {
        self.types.read().unwrap().values().cloned().collect()
    }

    /// The version registered with registry-wide `id`.
    pub fn by_id(&self, id: u64) -> Option<(Arc<Registered>, Arc<Version>)> {
        self.types.read().unwrap().values().find_map(|t| {
            let v = t.versions.values().find(|v| v.id == id)?;
            Some((t.clone(), v.clone()))
        })
    }

    /// The policy of `topic`.
    pub fn policy(&self, topic: &str) -> Policy {
        self.policies
            .get(topic)
            .copied()
            .unwrap_or(self.default_policy)
    }

    /// Validate an event's `data` against the schema of its type (the
    /// version `dataschema` names, else the latest), counting a failure at
    /// `stage`.
    pub fn validate(
        &self,
        stage: Stage,
        ty: &str,
        dataschema: Option<&str>,
        data: &[u8],
    ) -> Verdict {
        let Some(t) = self.get(ty) else {
            return Verdict::Unchecked;
        };
        let verdict = verdict(&t, dataschema, data);
        if let Verdict::Invalid { version, .. } = &verdict {
            let version = version.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
            self.telemetry.count(
                "sluice_schema_failures_total",
                &[
                    ("type", ty),
                    ("version", &version),
                    ("stage", stage.as_str()),
                ],
                1,
            );
        }
        verdict
    }

    /// Validate a module's output of type `ty` (against the latest
    /// version), counting a failure. An output whose data are the bytes of
    /// its input event, which passed version `input.schema`, is valid
    /// without being read again when the two versions are the same schema
    /// but for annotations (`title`, `description`, `examples`, ...): a
    /// filter or a router forwarding what it read.
    pub fn validate_output(&self, ty: &str, data: &[u8], input: Option<&Validated>) -> Verdict {
        if let Some(inp) = input
            && inp.data == data
            && let Some(t) = self.get(ty)
            && let Some(v) = t.versions.values().next_back()
            && self.same_rules(inp.schema, v.id)
        {
            return Verdict::Valid {
                version: v.version,
                id: v.id,
            };
        }
        self.validate(Stage::Output, ty, None, data)
    }

    /// Whether versions `a` and `b` (ids) accept exactly the same
    /// instances because they are the same schema but for annotations
    /// (decided once per pair: versions never change).
    fn same_rules(&self, a: u64, b: u64) -> bool {
        if a == b {
            return true;
        }
        if let Some(known) = self.same.read().unwrap().get(&(a, b)) {
            return *known;
        }
        let holds = match (self.by_id(a), self.by_id(b)) {
            (Some((_, x)), Some((_, y))) => {
                without_annotations(&x.schema) == without_annotations(&y.schema)
            }
            _ => false,
        };
        self.same.write().unwrap().insert((a, b), holds);
        holds
    }

    /// Remember what `module` consumes (checked by later registrations).
    pub fn set_consumer(&self, module: &str, consumes: Vec<contract::Consumes>) {
        let mut c = self.consumers.write().unwrap();
        if consumes.is_empty() {
            c.remove(module);
        } else {
            c.insert(module.into(), consumes);
        }
    }

    /// Forget `module`'s contracts (undeployed).
    pub fn remove_consumer(&self, module: &str) {
        self.consumers.write().unwrap().remove(module);
    }
}

fn registered(name: &str, stored: Stored) -> anyhow::Result<Registered> {
    let mode = stored
        .compatibility
        .parse::<Mode>()
        .map_err(|e| anyhow::anyhow!("stored schemas of `{name}`: {e}"))?;
    let mut versions = BTreeMap::new();
    for v in stored.versions {
        let validator = compile_for(&v.schema)
            .map_err(|e| anyhow::anyhow!("stored version {} of `{name}`: {e}", v.version))?;
        versions.insert(
            v.version,
            Arc::new(Version {
                version: v.version,
                id: v.id,
                schema: v.schema,
                validator,
            }),
        );
    }
    Ok(Registered {
        name: name.into(),
        owner: stored.owner,
        description: stored.description,
        mode,
        versions,
    })
}

/// Keywords whose value is a subschema (JSON Schema 2020-12, and the
/// draft-7 forms authors still write).
pub const SUBSCHEMA: &[&str] = &[
    "items",
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "additionalItems",
    "contentSchema",
];
/// Keywords whose value maps names to subschemas.
pub const SUBSCHEMA_MAP: &[&str] = &[
    "properties",
    "patternProperties",
    "$defs",
    "definitions",
    "dependentSchemas",
];
/// Keywords whose value is a list of subschemas.
pub const SUBSCHEMA_LIST: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems"];

/// `schema` without the keywords that only annotate (no instance is valid
/// or invalid because of them), wherever a subschema can be: so that two
/// schemas differing in titles, descriptions or examples compare equal.
/// Property names, enum values and constants are data and kept as they are.
pub fn without_annotations(schema: &Value) -> Value {
    const ANNOTATIONS: &[&str] = &[
        "title",
        "description",
        "examples",
        "$comment",
        "default",
        "deprecated",
        "readOnly",
        "writeOnly",
    ];
    let Value::Object(o) = schema else {
        return schema.clone();
    };
    o.iter()
        .filter(|(k, _)| !ANNOTATIONS.contains(&k.as_str()))
        .map(|(k, v)| {
            let v = match v {
                _ if SUBSCHEMA.contains(&k.as_str()) => without_annotations(v),
                Value::Object(m) if SUBSCHEMA_MAP.contains(&k.as_str()) => Value::Object(
                    m.iter()
                        .map(|(name, s)| (name.clone(), without_annotations(s)))
                        .collect(),
                ),
                Value::Array(xs) if SUBSCHEMA_LIST.contains(&k.as_str()) => {
                    Value::Array(xs.iter().map(without_annotations).collect())
                }
                other => other.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}

/// A validator of `serde_json::Value`s for a JSON Schema 2020-12 document
/// (no remote references).
pub fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    compile_for(schema)
}

/// [`compile`], for instances in representation `F` (the registry's are
/// [`tape::TapeJson`]).
pub fn compile_for<F: jsonschema::json::Json>(
    schema: &Value,
) -> Result<jsonschema::Validator<F>, String> {
    jsonschema::options_for::<F>()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(schema)
        .map_err(|e| format!("not a valid JSON Schema: {e}"))
}

/// The version a `dataschema` names: its last path segment (`.../3`,
/// `.../3.json`, `.../v3`) or a `version=3` query.
pub fn version_in(dataschema: &str) -> Option<u32> {
    if let Some((_, q)) = dataschema.split_once('?') {
        for kv in q.split('&') {
            if let Some(v) = kv.strip_prefix("version=") {
                return v.parse().ok();
            }
        }
    }
    let path = dataschema.split(['?', '#']).next()?;
    let last = path.trim_end_matches('/').rsplit('/').next()?;
    let last = last.strip_suffix(".json").unwrap_or(last);
    let last = last.strip_prefix('v').unwrap_or(last);
    last.parse().ok()
}

fn verdict(t: &Registered, dataschema: Option<&str>, data: &[u8]) -> Verdict {
    let named = dataschema.and_then(version_in);
    let v = match named {
        Some(n) => match t.versions.get(&n) {
            Some(v) => v,
            None => {
                return Verdict::Invalid {
                    version: Some(n),
                    violations: vec![Violation {
                        pointer: String::new(),
                        message: format!(
                            "`dataschema` names version {n} of `{}`, which is not registered (versions: {})",
                            t.name,
                            t.versions
                                .keys()
                                .map(u32::to_string)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    }],
                };
            }
        },
        None => match t.versions.values().next_back() {
            Some(v) => v,
            None => return Verdict::Unchecked,
        },
    };
    thread_local! {
        // One vector of slots per thread, document after document.
        static SLOTS: std::cell::Cell<Vec<tape::Slot>> = const { std::cell::Cell::new(Vec::new()) };
    }
    let (violations, slots) = match tape::Tape::parse_into(data, SLOTS.take()) {
        Ok(doc) => {
            let mut violations: Vec<Violation> = Vec::new();
            if !v.validator.is_valid(doc.root()) {
                violations.extend(v.validator.iter_errors(doc.root()).take(20).map(|e| {
                    Violation {
                        pointer: e.instance_path().to_string(),
                        message: e.to_string(),
                    }
                }));
                if violations.is_empty() {
                    violations.push(Violation {
                        pointer: String::new(),
                        message: "does not match the schema".into(),
                    });
                }
            }
            (violations, doc.into_slots())
        }
        Err((e, slots)) => (
            vec![Violation {
                pointer: String::new(),
                message: if e.is_duplicate_key() {
                    format!("data is ambiguous: {e} (readers differ on which value they take)")
                } else {
                    format!("data is not JSON: {e}")
                },
            }],
            slots,
        ),
    };
    // Kept for the next event unless a huge one grew it (16 bytes a slot).
    if slots.capacity() <= 1 << 16 {
        SLOTS.set(slots);
    }
    if violations.is_empty() {
        Verdict::Valid {
            version: v.version,
            id: v.id,
        }
    } else {
        Verdict::Invalid {
            version: Some(v.version),
            violations,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> dir::TypeMeta {
        dir::TypeMeta {
            owner: "orders".into(),
            description: "An order was placed.".into(),
            compatibility: "BACKWARD".into(),
        }
    }

    fn v1() -> Value {
        serde_json::json!({"type": "object", "additionalProperties": false,
            "properties": {"customer": {"type": "string"}, "amount": {"type": "integer", "minimum": 0}},
            "required": ["customer", "amount"]})
    }

    #[test]
    fn versions_are_named_by_dataschema_or_the_latest_is_used() {
        assert_eq!(
            version_in("https://example.com/schemas/order.created/2.json"),
            Some(2)
        );
        assert_eq!(version_in("order.created/v3"), Some(3));
        assert_eq!(version_in("urn:x?version=4"), Some(4));
        assert_eq!(version_in("https://example.com/order"), None);
    }

    #[test]
    fn annotations_are_dropped_where_subschemas_are_and_data_is_kept() {
        let s = serde_json::json!({
            "title": "t", "description": "d", "examples": [1],
            "type": "object",
            "properties": {
                "title": {"type": "string", "description": "a property called title"},
                "kind": {"enum": ["title", {"description": 1}]},
            },
            "items": {"$comment": "c", "type": "integer"},
            "oneOf": [{"title": "x", "minimum": 1}],
            "$defs": {"m": {"default": 0, "type": "integer"}},
            "const": {"title": "kept"},
        });
        assert_eq!(
            without_annotations(&s),
            serde_json::json!({
                "type": "object",
                "properties": {
                    "title": {"type": "string"},
                    "kind": {"enum": ["title", {"description": 1}]},
                },
                "items": {"type": "integer"},
                "oneOf": [{"minimum": 1}],
                "$defs": {"m": {"type": "integer"}},
                "const": {"title": "kept"},
            })
        );
    }

    #[test]
    fn a_forwarded_input_is_not_read_again_under_the_same_rules() {
        let d = tempfile::tempdir().unwrap();
        let r = Registry::empty(Arc::new(Store::open(d.path(), false).unwrap()));
        r.register("order.created", &meta(), Mode::Backward, 1, v1())
            .unwrap();
        // order.seen: the same rules under another title (the same schema
        // but for annotations); order.large: amounts from 100 only.
        let mut seen = v1();
        seen["title"] = "order.seen".into();
        seen["properties"]["amount"]["description"] = "in cents".into();
        r.register("order.seen", &meta(), Mode::Backward, 1, seen)
            .unwrap();
        let mut large = v1();
        large["properties"]["amount"]["minimum"] = 100.into();
        r.register("order.large", &meta(), Mode::Backward, 1, large)
            .unwrap();
        let data = br#"{"customer":"c1","amount":5}"#;
        let Verdict::Valid { id, .. } = r.validate(Stage::Input, "order.created", None, data)
        else {
            panic!("refused")
        };
        let input = Validated {
            schema: id,
            data: data.to_vec(),
        };
        assert!(matches!(
            r.validate_output("order.seen", data, Some(&input)),
            Verdict::Valid { .. }
        ));
        // Under other rules, the output is read and refused.
        assert!(matches!(
            r.validate_output("order.large", data, Some(&input)),
            Verdict::Invalid { .. }
        ));
        // Other bytes are read: the skip is for the input's own bytes only.
        let other = br#"{"customer":"c1","amount":-1}"#;
        assert!(matches!(
            r.validate_output("order.seen", other, Some(&input)),
            Verdict::Invalid { .. }
        ));
        // The skip is taken: bytes the input did not really pass (which no
        // pipeline hands it) are let through as the input's.
        let forged = Validated {
            schema: id,
            data: other.to_vec(),
        };
        assert!(matches!(
            r.validate_output("order.seen", other, Some(&forged)),
            Verdict::Valid { .. }
        ));
    }

    #[test]
    fn events_are_validated_with_pointers_and_history_survives_a_reopen() {
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(d.path(), false).unwrap());
        let r = Registry::empty(store.clone());
        r.register("order.created", &meta(), Mode::Backward, 1, v1())
            .unwrap();
        let ok = br#"{"customer":"c1","amount":5}"#;
        let bad = br#"{"customer":"c1","amount":-5}"#;
        assert_eq!(
            r.validate(Stage::Input, "order.created", None, ok),
            Verdict::Valid { version: 1, id: 1 }
        );
        let Verdict::Invalid { violations, .. } =
            r.validate(Stage::Input, "order.created", None, bad)
        else {
            panic!("not refused")
        };
        assert_eq!(violations[0].pointer, "/amount");
        assert_eq!(
            r.validate(Stage::Input, "other.thing.happened", None, bad),
            Verdict::Unchecked
        );
        let Verdict::Invalid { violations, .. } =
            r.validate(Stage::Input, "order.created", Some("order.created/7"), ok)
        else {
            panic!("an unknown version was accepted")
        };
        assert!(
            violations[0].message.contains("version 7"),
            "{violations:?}"
        );
        // A breaking version is refused, naming the change.
        let mut v2 = v1();
        v2["properties"]["amount"]["type"] = "string".into();
        let e = r
            .register("order.created", &meta(), Mode::Backward, 2, v2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/properties/amount"), "{e}");
        // History is kept.
        drop(r);
        let r = Registry::open(
            store,
            None,
            Arc::new(Telemetry::off()),
            Policy::Reject,
            BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(r.get("order.created").unwrap().versions.len(), 1);
        let e = r.register(
            "order.created",
            &meta(),
            Mode::Backward,
            1,
            serde_json::json!({}),
        );
        assert!(e.unwrap_err().to_string().contains("another schema"));
    }
}

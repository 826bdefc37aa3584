//! `module.toml`: what a module is, what it reads and writes, and its limits.
//!
//! ```
//! let m = sluice::config::Manifest::parse_str(r#"
//!     name = "order-totals"
//!     version = "1.2.0"
//!     component = "order_totals.wasm"
//!     [[subscribe]]
//!     topic = "orders"
//!     [[produce]]
//!     topic = "totals"
//! "#, "module.toml".as_ref()).unwrap();
//! assert_eq!(m.limits.deadline.as_millis(), 100);
//! ```

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::units::serde_units;

/// A parsed, validated module manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Module name: `[a-z0-9][a-z0-9-_]*`, unique in a host.
    pub name: String,
    /// Module version (semver text, shown by `sluice modules`).
    pub version: String,
    /// Path to the component, relative to the manifest's directory.
    pub component: PathBuf,
    /// What the module consumes.
    #[serde(default)]
    pub subscribe: Vec<Subscription>,
    /// Topics the module may emit to.
    #[serde(default)]
    pub produce: Vec<Produce>,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// Retry policy.
    #[serde(default)]
    pub retry: Retry,
    /// Idempotency-set settings.
    #[serde(default)]
    pub idempotency: Idempotency,
    /// Free-form values the module reads through the `config` import.
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
    /// Dead-letter topic (default `<name>.dlq`).
    #[serde(default, rename = "dead-letter-topic")]
    pub dead_letter_topic: Option<String>,
    /// Event types the module reads, with the versions and fields it
    /// relies on (checked against the schema registry at deploy).
    #[serde(default)]
    pub consumes: Vec<crate::schema::contract::Consumes>,
    /// Event types (and schema versions) the module writes.
    #[serde(default)]
    pub produces: Vec<crate::schema::contract::Produces>,
}

/// One `[[subscribe]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// Topic to read.
    pub topic: String,
    /// Only these CloudEvents types reach the module (others are skipped).
    #[serde(default)]
    pub types: Vec<String>,
    /// Where a new module starts reading.
    #[serde(default)]
    pub start: StartPosition,
}

/// Where a module starts reading a topic it has no cursor for yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StartPosition {
    /// The oldest retained event.
    #[default]
    Earliest,
    /// Only events appended after the module starts.
    Latest,
    /// The first event at or after this time (Unix milliseconds).
    Time(i64),
    /// This offset in every partition.
    Offset(u64),
}

impl std::str::FromStr for StartPosition {
    type Err = String;

    /// `earliest`, `latest`, an offset, or an RFC 3339 time.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "earliest" => Ok(StartPosition::Earliest),
            "latest" => Ok(StartPosition::Latest),
            other => {
                if let Ok(n) = other.parse::<u64>() {
                    return Ok(StartPosition::Offset(n));
                }
                time::OffsetDateTime::parse(other, &time::format_description::well_known::Rfc3339)
                    .map(|t| StartPosition::Time((t.unix_timestamp_nanos() / 1_000_000) as i64))
                    .map_err(|_| {
                        format!(
                            "`{other}` is not a start position: use \"earliest\", \"latest\", an RFC 3339 time or an offset"
                        )
                    })
            }
        }
    }
}

impl<'de> Deserialize<'de> for StartPosition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use super::units::serde_units::NumberOrString;
        match NumberOrString::deserialize(d)? {
            NumberOrString::N(n) => Ok(StartPosition::Offset(n)),
            NumberOrString::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// One `[[produce]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Produce {
    /// A topic the module may emit to.
    pub topic: String,
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory cap.
    #[serde(deserialize_with = "serde_units::size")]
    pub memory: u64,
    /// Per-event deadline.
    #[serde(deserialize_with = "serde_units::duration")]
    pub deadline: Duration,
    /// Most events one input event may emit.
    #[serde(rename = "max-emits")]
    pub max_emits: u32,
    /// Largest emitted payload.
    #[serde(rename = "max-emit-bytes", deserialize_with = "serde_units::size")]
    pub max_emit_bytes: u64,
    /// Largest state value.
    #[serde(rename = "max-state-value", deserialize_with = "serde_units::size")]
    pub max_state_value: u64,
    /// Most state writes per event.
    #[serde(rename = "max-state-writes")]
    pub max_state_writes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 64 << 20,
            deadline: Duration::from_millis(100),
            max_emits: 100,
            // Below the 1,000,000 bytes a Kafka broker and librdkafka take
            // by default (`message.max.bytes`), with room for the record's
            // own overhead.
            max_emit_bytes: 512 << 10,
            max_state_value: 1 << 20,
            max_state_writes: 1000,
        }
    }
}

/// `[limits]` in the host config: the most any module may ask for in its
/// own `[limits]`. A manifest above one is refused at deploy, naming it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ceilings {
    #[serde(deserialize_with = "serde_units::size")]
    pub memory: u64,
    #[serde(deserialize_with = "serde_units::duration")]
    pub deadline: Duration,
    #[serde(rename = "max-emits")]
    pub max_emits: u32,
    #[serde(rename = "max-emit-bytes", deserialize_with = "serde_units::size")]
    pub max_emit_bytes: u64,
    #[serde(rename = "max-state-value", deserialize_with = "serde_units::size")]
    pub max_state_value: u64,
    #[serde(rename = "max-state-writes")]
    pub max_state_writes: u32,
}

impl Default for Ceilings {
    fn default() -> Self {
        Ceilings {
            memory: 1 << 30,
            deadline: Duration::from_secs(30),
            max_emits: 10_000,
            max_emit_bytes: 900_000,
            max_state_value: 16 << 20,
            max_state_writes: 100_000,
        }
    }
}

impl Limits {
    /// Refuse limits above the host's ceilings, naming the field.
    pub fn within(&self, c: &Ceilings) -> Result<(), String> {
        let above = |field: &str, asked: String, ceiling: String| {
            Err(format!(
                "limits.{field}: {asked} is above this host's ceiling of {ceiling} ([limits] {field} in the host config)"
            ))
        };
        if self.memory > c.memory {
            return above("memory", self.memory.to_string(), c.memory.to_string());
        }
        if self.deadline > c.deadline {
            return above(
                "deadline",
                format!("{:?}", self.deadline),
                format!("{:?}", c.deadline),
            );
        }
        if self.max_emits > c.max_emits {
            return above(
                "max-emits",
                self.max_emits.to_string(),
                c.max_emits.to_string(),
            );
        }
        if self.max_emit_bytes > c.max_emit_bytes {
            return above(
                "max-emit-bytes",
                self.max_emit_bytes.to_string(),
                c.max_emit_bytes.to_string(),
            );
        }
        if self.max_state_value > c.max_state_value {
            return above(
                "max-state-value",
                self.max_state_value.to_string(),
                c.max_state_value.to_string(),
            );
        }
        if self.max_state_writes > c.max_state_writes {
            return above(
                "max-state-writes",
                self.max_state_writes.to_string(),
                c.max_state_writes.to_string(),
            );
        }
        Ok(())
    }
}

/// `[retry]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retry {
    /// Attempts before an event is dead-lettered (the first attempt counts).
    #[serde(rename = "max-attempts")]
    pub max_attempts: u32,
    /// Exponential backoff between attempts.
    pub backoff: Backoff,
    /// Whether a trap (panic, deadline, memory) is retried like `retry`.
    #[serde(rename = "retry-traps")]
    pub retry_traps: bool,
    /// After this many dead-lettered events in a row the module is quarantined:
    /// it stops consuming until `sluice resume`. 0 never quarantines.
    #[serde(rename = "quarantine-after")]
    pub quarantine_after: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            max_attempts: 5,
            backoff: Backoff::default(),
            retry_traps: true,
            quarantine_after: 100,
        }
    }
}

/// `[retry.backoff]`: exponential with full jitter between `initial` and `max`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    /// First delay.
    #[serde(deserialize_with = "serde_units::duration")]
    pub initial: Duration,
    /// Largest delay.
    #[serde(deserialize_with = "serde_units::duration")]
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

/// `[idempotency]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Idempotency {
    /// How long an applied event's id is remembered.
    #[serde(deserialize_with = "serde_units::duration")]
    pub ttl: Duration,
}

impl Default for Idempotency {
    fn default() -> Self {
        Idempotency {
            ttl: Duration::from_secs(7 * 86400),
        }
    }
}

/// Whether `name` is a valid module or topic name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.')
}

impl Manifest {
    /// Read and validate `path`.
    pub fn load(path: &Path) -> Result<Manifest, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read manifest: {e}", path.display()))?;
        Self::parse_str(&text, path)
    }

    /// Parse and validate manifest text; `path` is only used in messages.
    pub fn parse_str(text: &str, path: &Path) -> Result<Manifest, String> {
        let m: Manifest = toml::from_str(text).map_err(|e| super::toml_error(path, &e))?;
        m.validate()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(m)
    }

    fn validate(&self) -> Result<(), String> {
        if !valid_name(&self.name) {
            return Err(format!(
                "name: `{}` is not a valid module name (letters, digits, `-`, `_`, `.`)",
                self.name
            ));
        }
        if self.version.trim().is_empty() {
            return Err("version: must not be empty".into());
        }
        if self.subscribe.is_empty() {
            return Err("subscribe: a module needs at least one [[subscribe]] topic".into());
        }
        for (i, s) in self.subscribe.iter().enumerate() {
            if self.subscribe[..i].iter().any(|o| o.topic == s.topic) {
                return Err(format!(
                    "subscribe[{i}].topic: `{}` is subscribed twice; list all its types in one entry",
                    s.topic
                ));
            }
            if !valid_name(&s.topic) {
                return Err(format!(
                    "subscribe[{i}].topic: `{}` is not a valid topic name",
                    s.topic
                ));
            }
        }
        for (i, p) in self.produce.iter().enumerate() {
            if !valid_name(&p.topic) {
                return Err(format!(
                    "produce[{i}].topic: `{}` is not a valid topic name",
                    p.topic
                ));
            }
            if p.topic.ends_with(".replay") {
                return Err(format!(
                    "produce[{i}].topic: `{}` is reserved: `<module>.replay` topics carry dead-letter replays",
                    p.topic
                ));
            }
            if self.subscribe.iter().any(|s| s.topic == p.topic) {
                return Err(format!(
                    "produce[{i}].topic: `{}` is also subscribed; a module may not feed its own input",
                    p.topic
                ));
            }
        }
        for (i, p) in self.produces.iter().enumerate() {
            if let Some(t) = &p.topic
                && !self.produce.iter().any(|o| &o.topic == t)
            {
                return Err(format!(
                    "produces[{i}].topic: `{t}` is not one of this module's [[produce]] topics"
                ));
            }
        }
        if self.limits.memory < (1 << 20) {
            return Err("limits.memory: must be at least 1MiB".into());
        }
        if self.limits.deadline.is_zero() {
            return Err("limits.deadline: must be more than 0".into());
        }
        if self.retry.max_attempts == 0 {
            return Err("retry.max-attempts: must be at least 1".into());
        }
        if self.retry.backoff.initial > self.retry.backoff.max {
            return Err("retry.backoff: `initial` must not exceed `max`".into());
        }
        if let Some(t) = &self.dead_letter_topic {
            if !valid_name(t) {
                return Err(format!(
                    "dead-letter-topic: `{t}` is not a valid topic name"
                ));
            }
            if t.ends_with(".replay") {
                return Err(format!(
                    "dead-letter-topic: `{t}` is reserved: `<module>.replay` topics carry dead-letter replays"
                ));
            }
            if self.subscribe.iter().any(|s| &s.topic == t) {
                return Err(format!(
                    "dead-letter-topic: `{t}` is an input of this module; its rejected events would come back to it forever"
                ));
            }
            if self.produce.iter().any(|p| &p.topic == t) {
                return Err(format!(
                    "dead-letter-topic: `{t}` is also an output of this module; dead letters need a topic of their own"
                ));
            }
        }
        Ok(())
    }

    /// Where `sluice dlq replay` puts dead letters for this module to read
    /// again (partitioned like its inputs).
    pub fn replay_topic(&self) -> String {
        format!("{}.replay", self.name)
    }

    /// The dead-letter topic: `dead-letter-topic`, or `<name>.dlq`.
    pub fn dlq_topic(&self) -> String {
        self.dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{}.dlq", self.name))
    }

    /// The `[config]` table as the `config` import returns it: strings as they
    /// are, other values as JSON text.
    pub fn config_strings(&self) -> BTreeMap<String, String> {
        self.config
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    toml::Value::String(s) => s.clone(),
                    other => serde_json::to_string(other).unwrap_or_default(),
                };
                (k.clone(), s)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Manifest, String> {
        Manifest::parse_str(s, Path::new("m/module.toml"))
    }

    const BASE: &str =
        "name = \"a\"\nversion = \"1\"\ncomponent = \"a.wasm\"\n[[subscribe]]\ntopic = \"t\"\n";

    #[test]
    fn full_manifest_parses() {
        let m = parse(
            r#"
name = "order-totals"
version = "1.2.0"
component = "order_totals.wasm"
[[subscribe]]
topic = "orders"
types = ["order.created", "order.cancelled"]
start = "2026-01-01T00:00:00Z"
[[produce]]
topic = "order-totals"
[limits]
memory = "64MiB"
deadline = "100ms"
[retry]
max-attempts = 5
backoff = { initial = "100ms", max = "10s" }
[idempotency]
ttl = "7d"
[config]
currency = "EUR"
min = 10
"#,
        )
        .unwrap();
        assert_eq!(m.subscribe[0].types.len(), 2);
        assert!(matches!(
            m.subscribe[0].start,
            StartPosition::Time(1767225600000)
        ));
        assert_eq!(m.retry.max_attempts, 5);
        let c = m.config_strings();
        assert_eq!(c["currency"], "EUR");
        assert_eq!(c["min"], "10");
        assert_eq!(m.dlq_topic(), "order-totals.dlq");
    }

    #[test]
    fn a_dead_letter_topic_may_not_be_an_input_an_output_or_a_replay_topic() {
        // `dead-letter-topic` is a top-level key: it goes before the tables.
        let with = |t: &str, extra: &str| {
            parse(&format!("dead-letter-topic = \"{t}\"\n{BASE}{extra}")).unwrap_err()
        };
        let e = with("t", "");
        assert!(
            e.contains("dead-letter-topic") && e.contains("input"),
            "{e}"
        );
        let e = with("b.replay", "");
        assert!(e.contains("reserved"), "{e}");
        let e = with("out", "[[produce]]\ntopic = \"out\"\n");
        assert!(e.contains("output"), "{e}");
        let m = parse(&format!("dead-letter-topic = \"a-dead\"\n{BASE}")).unwrap();
        assert_eq!(m.dlq_topic(), "a-dead");
    }

    #[test]
    fn a_produced_type_names_one_of_the_modules_topics() {
        let out = "[[produce]]\ntopic = \"out\"\n";
        let m = parse(&format!(
            "{BASE}{out}[[produces]]\ntype = \"a.b.made\"\nversion = 1\ntopic = \"out\"\n"
        ))
        .unwrap();
        assert_eq!(m.produces[0].topic.as_deref(), Some("out"));
        let e = parse(&format!(
            "{BASE}{out}[[produces]]\ntype = \"a.b.made\"\nversion = 1\ntopic = \"elsewhere\"\n"
        ))
        .unwrap_err();
        assert!(
            e.contains("produces[0].topic") && e.contains("`elsewhere`"),
            "{e}"
        );
    }

    #[test]
    fn limits_above_the_hosts_ceilings_are_named() {
        let m = parse(&format!("{BASE}[limits]\nmemory = \"2GiB\"\n")).unwrap();
        let e = m.limits.within(&Ceilings::default()).unwrap_err();
        assert!(e.starts_with("limits.memory: 2147483648 is above"), "{e}");
        let m = parse(&format!("{BASE}[limits]\nmax-emit-bytes = \"1MiB\"\n")).unwrap();
        let e = m.limits.within(&Ceilings::default()).unwrap_err();
        assert!(e.contains("limits.max-emit-bytes"), "{e}");
        assert!(
            parse(BASE)
                .unwrap()
                .limits
                .within(&Ceilings::default())
                .is_ok()
        );
    }

    #[test]
    fn unknown_field_is_refused_and_named() {
        let e = parse(&format!("{BASE}[limits]\nmemroy = \"1MiB\"\n")).unwrap_err();
        assert!(e.contains("memroy"), "{e}");
        assert!(e.contains("m/module.toml"), "{e}");
    }

    #[test]
    fn bad_values_name_their_field() {
        let e = parse(&format!("{BASE}[limits]\nmemory = \"lots\"\n")).unwrap_err();
        assert!(e.contains("lots"), "{e}");
        let e = parse(&format!("{BASE}[retry]\nmax-attempts = 0\n")).unwrap_err();
        assert!(e.contains("retry.max-attempts"), "{e}");
        let e = parse(&BASE.replace("\"t\"", "\"bad topic\"")).unwrap_err();
        assert!(e.contains("subscribe[0].topic"), "{e}");
        let e = parse("name = \"a\"\nversion = \"1\"\ncomponent = \"a.wasm\"\n").unwrap_err();
        assert!(e.contains("subscribe"), "{e}");
        let e = parse(&format!("{BASE}[[subscribe]]\ntopic = \"t\"\n")).unwrap_err();
        assert!(
            e.contains("subscribe[1].topic") && e.contains("twice"),
            "{e}"
        );
        let e = parse(&BASE.replace("component = \"a.wasm\"\n", "")).unwrap_err();
        assert!(e.contains("component"), "{e}");
    }
}

//! The event catalog: every topic, event type and version, who owns each
//! type, which modules write and read it, and example events, as an
//! AsyncAPI 3.0 document ([`asyncapi`]) and a static HTML page ([`html`]).
//!
//! A [`Catalog`] is built from what a host runs (its registered schemas and
//! deployed modules: `GET /v1/catalog`, the page at `/catalog`) or offline
//! from a schema directory and module manifests (`sluice catalog`). Both
//! renderings derive everything from it, so they never disagree.
//!
//! Which event types travel on which topic comes from the manifests: a
//! module's `[[subscribe]]` topic carries the types it consumes (narrowed by
//! the subscription's `types`), and a `[[produce]]` topic the types it
//! produces (its `[[produces]] topic`, or the module's only produce topic;
//! with several and none named, every one of them).

pub mod asyncapi;
pub mod html;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::contract::{Consumes, Produces};
use super::dir::TypeDir;
use super::{Registered, Registry};
use crate::config::Manifest;

/// What the catalog describes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Catalog {
    pub title: String,
    /// Where the topics live (a Kafka cluster, or a host's embedded log).
    #[serde(default)]
    pub servers: Vec<Server>,
    pub types: Vec<EventType>,
    pub modules: Vec<ModuleUse>,
}

/// A place the topics live.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Server {
    pub name: String,
    /// `host:port`.
    pub host: String,
    /// `kafka` or `http`.
    pub protocol: String,
    #[serde(default)]
    pub pathname: Option<String>,
    pub description: String,
}

/// One event type with its versions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventType {
    pub name: String,
    pub owner: String,
    pub description: String,
    pub compatibility: String,
    /// Version -> JSON Schema.
    pub versions: BTreeMap<u32, Value>,
}

/// What a module reads and writes, from its manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModuleUse {
    pub name: String,
    pub version: String,
    /// Subscribed topic -> the types its subscription lets through (empty: all).
    pub subscribe: BTreeMap<String, Vec<String>>,
    /// Topics it may write to.
    pub produce: Vec<String>,
    pub dead_letter_topic: String,
    #[serde(default)]
    pub consumes: Vec<Consumes>,
    #[serde(default)]
    pub produces: Vec<Produces>,
}

impl From<&Manifest> for ModuleUse {
    fn from(m: &Manifest) -> Self {
        ModuleUse {
            name: m.name.clone(),
            version: m.version.clone(),
            subscribe: m
                .subscribe
                .iter()
                .map(|s| (s.topic.clone(), s.types.clone()))
                .collect(),
            produce: m.produce.iter().map(|p| p.topic.clone()).collect(),
            dead_letter_topic: m.dlq_topic(),
            consumes: m.consumes.clone(),
            produces: m.produces.clone(),
        }
    }
}

impl From<&TypeDir> for EventType {
    fn from(t: &TypeDir) -> Self {
        EventType {
            name: t.name.clone(),
            owner: t.meta.owner.clone(),
            description: t.meta.description.clone(),
            compatibility: t.mode.as_str().into(),
            versions: t.versions.clone(),
        }
    }
}

impl From<&Registered> for EventType {
    fn from(t: &Registered) -> Self {
        EventType {
            name: t.name.clone(),
            owner: t.owner.clone(),
            description: t.description.clone(),
            compatibility: t.mode.as_str().into(),
            versions: t
                .versions
                .iter()
                .map(|(n, v)| (*n, v.schema.clone()))
                .collect(),
        }
    }
}

/// One kind of message on a topic: a version of a type, or a type with no
/// schema (`version` none).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Message {
    pub ty: String,
    pub version: Option<u32>,
}

impl Message {
    /// Its key in the AsyncAPI document and its anchor in the page:
    /// `order.created.v1`, or `<type>.none` for a type with no schema
    /// (see [`safe_key`]: no two messages share a key).
    pub fn key(&self) -> String {
        let base = safe_key(&self.ty);
        match self.version {
            Some(v) => format!("{base}.v{v}"),
            None => format!("{base}.none"),
        }
    }
}

/// An event type as the keys AsyncAPI allows in `components`
/// (`[A-Za-z0-9._-]`), one to one: `_` is written `__`, and any other
/// character outside the set as `_` and the hex of each of its UTF-8 bytes.
pub fn safe_key(s: &str) -> String {
    escape(s, ".-")
}

/// [`safe_key`] with `.` escaped too (`_2E`): a key part that never contains
/// the separator of the parts after it.
pub fn dotless_key(s: &str) -> String {
    escape(s, "-")
}

/// `s` with `_` written `__` and every character that is neither ASCII
/// alphanumeric nor in `keep` written `_` plus the hex of its UTF-8 bytes.
fn escape(s: &str, keep: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '_' => out.push_str("__"),
            c if c.is_ascii_alphanumeric() || keep.contains(c) => out.push(c),
            c => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("_{b:02X}"));
                }
            }
        }
    }
    out
}

/// One topic as the modules use it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Topic {
    pub name: String,
    pub messages: BTreeSet<Message>,
    /// Modules writing to it.
    pub producers: BTreeSet<String>,
    /// Modules reading it.
    pub consumers: BTreeSet<String>,
}

/// One module's use of one topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub module: String,
    /// `send` or `receive` (AsyncAPI's words).
    pub action: &'static str,
    pub topic: String,
    pub messages: BTreeSet<Message>,
}

impl Catalog {
    /// What a running host has: its registered types and deployed modules.
    pub fn of_host(
        title: &str,
        servers: Vec<Server>,
        registry: &Registry,
        manifests: &[std::sync::Arc<Manifest>],
    ) -> Catalog {
        let mut types: Vec<EventType> = registry
            .types()
            .iter()
            .map(|t| EventType::from(&**t))
            .collect();
        types.sort_by(|a, b| a.name.cmp(&b.name));
        let mut c = Catalog {
            title: title.into(),
            servers,
            types,
            modules: Vec::new(),
        };
        for m in manifests {
            c.put_module(ModuleUse::from(&**m));
        }
        c
    }

    /// A schema directory's types, with no modules yet.
    pub fn of_dir(title: &str, types: &[TypeDir]) -> Catalog {
        Catalog {
            title: title.into(),
            servers: Vec::new(),
            types: types.iter().map(EventType::from).collect(),
            modules: Vec::new(),
        }
    }

    /// Add `m`, replacing a module of the same name.
    pub fn put_module(&mut self, m: ModuleUse) {
        self.modules.retain(|o| o.name != m.name);
        self.modules.push(m);
        self.modules.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// The type called `name`.
    pub fn event_type(&self, name: &str) -> Option<&EventType> {
        self.types.iter().find(|t| t.name == name)
    }

    /// The messages a module reading `ty` (through `consumes`, if it has
    /// an entry for it) may get: the registered versions it accepts, or the
    /// bare type when it has no schema.
    fn consumed(&self, ty: &str, consumes: Option<&Consumes>) -> Vec<Message> {
        match self.event_type(ty) {
            Some(t) => t
                .versions
                .keys()
                .filter(|v| consumes.is_none_or(|c| c.accepts(**v)))
                .map(|v| Message {
                    ty: ty.into(),
                    version: Some(*v),
                })
                .collect(),
            None => vec![Message {
                ty: ty.into(),
                version: None,
            }],
        }
    }

    /// Every module's use of every topic: what it reads from each
    /// subscribed topic and writes to each produce topic.
    pub fn operations(&self) -> Vec<Operation> {
        let mut out = Vec::new();
        for m in &self.modules {
            for (topic, filter) in &m.subscribe {
                let types: BTreeSet<&str> = if filter.is_empty() {
                    m.consumes.iter().map(|c| c.ty.as_str()).collect()
                } else {
                    filter.iter().map(String::as_str).collect()
                };
                let messages = types
                    .into_iter()
                    .flat_map(|ty| self.consumed(ty, m.consumes.iter().find(|c| c.ty == ty)))
                    .collect();
                out.push(Operation {
                    module: m.name.clone(),
                    action: "receive",
                    topic: topic.clone(),
                    messages,
                });
            }
            for topic in &m.produce {
                let messages = m
                    .produces
                    .iter()
                    .filter(|p| match &p.topic {
                        Some(t) => t == topic,
                        // Unplaced: on the only topic, or on any of several.
                        None => true,
                    })
                    .map(|p| Message {
                        ty: p.ty.clone(),
                        version: self
                            .event_type(&p.ty)
                            .filter(|t| t.versions.contains_key(&p.version))
                            .map(|_| p.version),
                    })
                    .collect();
                out.push(Operation {
                    module: m.name.clone(),
                    action: "send",
                    topic: topic.clone(),
                    messages,
                });
            }
        }
        out
    }

    /// Every topic a module reads or writes, with its messages, producers
    /// and consumers.
    pub fn topics(&self) -> BTreeMap<String, Topic> {
        let mut topics: BTreeMap<String, Topic> = BTreeMap::new();
        for op in self.operations() {
            let t = topics.entry(op.topic.clone()).or_insert_with(|| Topic {
                name: op.topic.clone(),
                ..Topic::default()
            });
            t.messages.extend(op.messages);
            match op.action {
                "send" => t.producers.insert(op.module),
                _ => t.consumers.insert(op.module),
            };
        }
        topics
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest(text: &str) -> ModuleUse {
        let m = Manifest::parse_str(
            &format!("name = \"m\"\nversion = \"1\"\ncomponent = \"m.wasm\"\n{text}"),
            "module.toml".as_ref(),
        )
        .unwrap();
        ModuleUse::from(&m)
    }

    fn catalog() -> Catalog {
        let ty = |name: &str, versions: &[u32]| EventType {
            name: name.into(),
            owner: "team".into(),
            description: "d".into(),
            compatibility: "BACKWARD".into(),
            versions: versions.iter().map(|v| (*v, json!({}))).collect(),
        };
        Catalog {
            title: "t".into(),
            servers: vec![],
            types: vec![ty("order.created", &[1, 2]), ty("order.large", &[1])],
            modules: vec![],
        }
    }

    fn msg(ty: &str, version: Option<u32>) -> Message {
        Message {
            ty: ty.into(),
            version,
        }
    }

    #[test]
    fn topics_carry_what_their_readers_consume_and_their_writers_produce() {
        let mut c = catalog();
        c.put_module(manifest(
            "[[subscribe]]\ntopic = \"orders\"\n[[produce]]\ntopic = \"large\"\n\
             [[consumes]]\ntype = \"order.created\"\nversions = [2]\n\
             [[produces]]\ntype = \"order.large\"\nversion = 1\n",
        ));
        let topics = c.topics();
        assert_eq!(
            topics["orders"].messages,
            BTreeSet::from([msg("order.created", Some(2))])
        );
        assert_eq!(
            topics["orders"].consumers,
            BTreeSet::from(["m".to_string()])
        );
        assert_eq!(
            topics["large"].messages,
            BTreeSet::from([msg("order.large", Some(1))])
        );
        assert_eq!(topics["large"].producers, BTreeSet::from(["m".to_string()]));
    }

    #[test]
    fn a_subscription_filter_narrows_and_unknown_types_have_no_version() {
        let mut c = catalog();
        c.put_module(manifest(
            "[[subscribe]]\ntopic = \"orders\"\ntypes = [\"order.created\", \"order.cancelled\"]\n\
             [[produce]]\ntopic = \"a\"\n[[produce]]\ntopic = \"b\"\n\
             [[produces]]\ntype = \"order.large\"\nversion = 1\ntopic = \"b\"\n\
             [[produces]]\ntype = \"order.large\"\nversion = 7\n",
        ));
        let topics = c.topics();
        assert_eq!(
            topics["orders"].messages,
            BTreeSet::from([
                msg("order.cancelled", None),
                msg("order.created", Some(1)),
                msg("order.created", Some(2)),
            ])
        );
        // Version 7 has no schema; unplaced, it may go to either topic.
        assert_eq!(
            topics["a"].messages,
            BTreeSet::from([msg("order.large", None)])
        );
        assert_eq!(
            topics["b"].messages,
            BTreeSet::from([msg("order.large", Some(1)), msg("order.large", None)])
        );
    }

    #[test]
    fn keys_are_what_asyncapi_allows_and_never_shared() {
        assert_eq!(msg("order.created", Some(3)).key(), "order.created.v3");
        assert_eq!(
            msg("com.example/Order created", None).key(),
            "com.example_2FOrder_20created.none"
        );
        // Types that a lossy replacement would merge stay apart.
        let keys = [
            msg("a/b", None).key(),
            msg("a_b", None).key(),
            msg("a_2Fb", None).key(),
            msg("x.v1", None).key(),
            msg("x", Some(1)).key(),
        ];
        let distinct: BTreeSet<&String> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "{keys:?}");
        for k in &keys {
            assert!(
                k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
                "{k}"
            );
        }
    }
}

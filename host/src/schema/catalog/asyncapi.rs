//! The catalog as an AsyncAPI 3.0 document (JSON).
//!
//! - `channels`: one per topic a module reads or writes (address = topic),
//!   with the messages it carries;
//! - `operations`: `<module>.receive.<topic>` and `<module>.send.<topic>`
//!   (a `.` or `_` in the module name escaped, so no two operations share an
//!   id);
//! - `components.messages`: every version of every type
//!   (`order.created.v1`), its payload the version's JSON Schema
//!   (`schemaFormat` draft 2020-12, local `$ref`s rewritten to point inside
//!   the document), its examples, and the CloudEvents attributes as Kafka
//!   headers (binary mode); a type with no schema is a message without a
//!   payload.
//!
//! `x-sluice-*` fields carry what AsyncAPI has no field for: owner,
//! compatibility mode, version.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{Catalog, EventType, Message, dotless_key};

/// The AsyncAPI version written.
pub const VERSION: &str = "3.0.0";

/// What `payload.schemaFormat` says of the schemas.
pub const SCHEMA_FORMAT: &str = "application/schema+json;version=draft-2020-12";

/// The document.
pub fn document(c: &Catalog) -> Value {
    let mut channels = Map::new();
    let topics = c.topics();
    for (name, t) in &topics {
        let messages: Map<String, Value> = t
            .messages
            .iter()
            .map(|m| {
                let k = m.key();
                (
                    k.clone(),
                    json!({ "$ref": format!("#/components/messages/{k}") }),
                )
            })
            .collect();
        let mut who = Vec::new();
        if !t.producers.is_empty() {
            who.push(format!("written by {}", list(&t.producers)));
        }
        if !t.consumers.is_empty() {
            who.push(format!("read by {}", list(&t.consumers)));
        }
        channels.insert(
            name.clone(),
            json!({
                "address": name,
                "title": name,
                "description": format!("Topic `{name}`, {}.", who.join(", ")),
                "messages": messages,
            }),
        );
    }

    let mut operations = Map::new();
    for op in c.operations() {
        // Topic and module names are already what AsyncAPI keys allow.
        let ch = op.topic.clone();
        let verb = if op.action == "send" {
            "writes to"
        } else {
            "reads"
        };
        let messages: Vec<Value> = op
            .messages
            .iter()
            .map(|m| json!({ "$ref": format!("#/channels/{ch}/messages/{}", m.key()) }))
            .collect();
        operations.insert(
            operation_id(&op.module, op.action, ch.as_str()),
            json!({
                "action": op.action,
                "channel": { "$ref": format!("#/channels/{ch}") },
                "summary": format!("Module `{}` {verb} `{}`.", op.module, op.topic),
                "messages": messages,
                "x-sluice-module": op.module,
            }),
        );
    }

    let mut messages = Map::new();
    for t in &c.types {
        for (v, schema) in &t.versions {
            let m = Message {
                ty: t.name.clone(),
                version: Some(*v),
            };
            messages.insert(m.key(), versioned(t, *v, schema, &m.key()));
        }
    }
    // Types modules use that have no schema.
    for m in topics.values().flat_map(|t| &t.messages) {
        if m.version.is_none() {
            messages.insert(
                m.key(),
                json!({
                    "name": m.ty,
                    "title": m.ty,
                    "summary": format!("`{}` has no registered schema: its data is not validated.", m.ty),
                    "contentType": "application/json",
                    "headers": headers(&m.ty, None),
                }),
            );
        }
    }

    let mut servers = Map::new();
    for s in &c.servers {
        let mut v = json!({
            "host": s.host,
            "protocol": s.protocol,
            "description": s.description,
        });
        if let Some(p) = &s.pathname {
            v["pathname"] = json!(p);
        }
        servers.insert(s.name.clone(), v);
    }

    let mut doc = json!({
        "asyncapi": VERSION,
        "info": {
            "title": c.title,
            "version": version_of(c),
            "description": format!(
                "The events of {}: {} event types in {} versions on {} topics, {} modules. \
                 Events are CloudEvents 1.0 with JSON data; each version's payload is its JSON Schema. \
                 Written by `sluice catalog`.",
                c.title,
                c.types.len(),
                c.types.iter().map(|t| t.versions.len()).sum::<usize>(),
                topics.len(),
                c.modules.len(),
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": { "messages": messages },
    });
    if !servers.is_empty() {
        doc["servers"] = Value::Object(servers);
    }
    doc
}

/// A version of a type as a message.
fn versioned(t: &EventType, v: u32, schema: &Value, key: &str) -> Value {
    let mut payload = schema.clone();
    rebase_refs(
        &mut payload,
        &format!("#/components/messages/{key}/payload/schema"),
    );
    let examples: Vec<Value> = schema
        .get("examples")
        .and_then(Value::as_array)
        .map(|xs| {
            xs.iter()
                .enumerate()
                .map(|(i, data)| {
                    json!({
                        "name": format!("example-{}", i + 1),
                        "headers": example_headers(&t.name, v, i),
                        "payload": data,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "name": t.name,
        "title": format!("{} v{v}", t.name),
        "summary": t.description,
        "contentType": "application/json",
        "headers": headers(&t.name, Some(v)),
        "payload": { "schemaFormat": SCHEMA_FORMAT, "schema": payload },
        "examples": examples,
        "x-sluice-owner": t.owner,
        "x-sluice-compatibility": t.compatibility,
        "x-sluice-version": v,
    })
}

/// The CloudEvents attributes, as Kafka headers in binary mode.
fn headers(ty: &str, version: Option<u32>) -> Value {
    let dataschema = match version {
        Some(v) => format!(
            "Names the schema version, ending in `/{v}` (or `/{v}.json`); without it the latest version validates the data."
        ),
        None => "The schema the data follows, if any.".into(),
    };
    json!({
        "type": "object",
        "description": "CloudEvents 1.0 attributes (Kafka headers in binary mode; the embedded log keeps them with the event).",
        "required": ["ce_specversion", "ce_id", "ce_source", "ce_type"],
        "properties": {
            "ce_specversion": { "type": "string", "const": "1.0" },
            "ce_id": { "type": "string", "description": "With ce_source, the event's identity: a redelivered or replayed event is applied once." },
            "ce_source": { "type": "string" },
            "ce_type": { "type": "string", "const": ty },
            "ce_time": { "type": "string", "format": "date-time" },
            "ce_subject": { "type": "string" },
            "ce_dataschema": { "type": "string", "description": dataschema },
            "traceparent": { "type": "string", "description": "W3C trace context, continued by every module." },
        },
    })
}

fn example_headers(ty: &str, v: u32, i: usize) -> Value {
    json!({
        "ce_specversion": "1.0",
        "ce_id": format!("example-{}", i + 1),
        "ce_source": "/catalog/examples",
        "ce_type": ty,
        "ce_dataschema": format!("{ty}/{v}"),
    })
}

/// Rewrite every local `$ref` that is a JSON pointer (`#` or `#/...`,
/// relative to the schema's root) to point at the same place inside the
/// document, under `base`. Only subschemas are walked: `const`, `enum`,
/// `default` and `examples` are data, and a property may be called `$ref`.
/// Anchors (`#name`) are left as they are.
pub fn rebase_refs(v: &mut Value, base: &str) {
    use crate::schema::{SUBSCHEMA, SUBSCHEMA_LIST, SUBSCHEMA_MAP};
    let Value::Object(o) = v else {
        return;
    };
    for (k, x) in o.iter_mut() {
        match (k.as_str(), x) {
            ("$ref", Value::String(r)) => {
                if let Some(rest) = r.strip_prefix('#')
                    && (rest.is_empty() || rest.starts_with('/'))
                {
                    *r = format!("{base}{rest}");
                }
            }
            (k, x) if SUBSCHEMA.contains(&k) => rebase_refs(x, base),
            (k, Value::Object(m)) if SUBSCHEMA_MAP.contains(&k) => {
                m.values_mut().for_each(|s| rebase_refs(s, base));
            }
            (k, Value::Array(xs)) if SUBSCHEMA_LIST.contains(&k) => {
                xs.iter_mut().for_each(|s| rebase_refs(s, base));
            }
            _ => {}
        }
    }
}

/// `a, b and c`.
fn list(names: &std::collections::BTreeSet<String>) -> String {
    let names: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

/// The document's `info.version`: changes whenever anything in the
/// catalog does.
fn version_of(c: &Catalog) -> String {
    let bytes = serde_json::to_vec(c).unwrap_or_default();
    let h = Sha256::digest(&bytes);
    let hex: String = h.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("0.0.0+{hex}")
}

/// The id of `module`'s `action` on `topic`: `<module>.<action>.<topic>`,
/// the module name with its dots escaped ([`dotless_key`]), so the first dot
/// ends it and the id names one operation only.
fn operation_id(module: &str, action: &str, topic: &str) -> String {
    format!("{}.{action}.{topic}", dotless_key(module))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_are_readable_and_never_shared() {
        assert_eq!(
            operation_id("filter", "receive", "orders"),
            "filter.receive.orders"
        );
        // Module `a` writing to `receive.x`, module `a.send` reading `x`.
        let sends = operation_id("a", "send", "receive.x");
        let receives = operation_id("a.send", "receive", "x");
        assert_ne!(sends, receives);
        assert_eq!(receives, "a_2Esend.receive.x");
        // `_2E` written by a module name is not a dot.
        assert_ne!(
            operation_id("a_2Esend", "receive", "x"),
            receives,
            "an underscore is escaped too"
        );
    }

    #[test]
    fn local_refs_point_inside_the_document_and_others_are_left() {
        let mut s = json!({
            "$defs": { "money": { "$anchor": "money", "type": "integer" } },
            "properties": {
                "amount": { "$ref": "#/$defs/money" },
                "self": { "$ref": "#" },
                "remote": { "$ref": "https://example.com/s.json" },
                "anchored": { "$ref": "#money" },
                "$ref": { "items": { "$ref": "#/$defs/money" } },
                "data": { "const": { "$ref": "#/not/a/ref" } },
            },
        });
        rebase_refs(&mut s, "#/components/messages/x.v1/payload/schema");
        assert_eq!(
            s["properties"]["amount"]["$ref"],
            "#/components/messages/x.v1/payload/schema/$defs/money"
        );
        assert_eq!(
            s["properties"]["self"]["$ref"],
            "#/components/messages/x.v1/payload/schema"
        );
        assert_eq!(
            s["properties"]["remote"]["$ref"],
            "https://example.com/s.json"
        );
    }
}

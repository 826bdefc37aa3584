//! Consumer-driven contracts: a module's manifest says which event types it
//! consumes (and which versions, and optionally the fields it reads, as a
//! JSON Schema contract) and which it produces. At deploy the host refuses a
//! module whose consumed types no registered version satisfies, whose
//! contract a registered producer schema can violate, or that produces a
//! type or version with no schema; and the registry refuses a new version
//! that would break a deployed module's contract.
//!
//! A contract holds when every event valid under the producer's schema is
//! valid under the contract: the contract reads what the schema writes
//! (`sluice_schema::reader_rejects(schema, contract)` is empty).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_schema::Incompatibility;

/// `[[consumes]]` of a manifest.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Consumes {
    /// The event type.
    #[serde(rename = "type")]
    pub ty: String,
    /// The versions the module reads (all, if absent).
    #[serde(default)]
    pub versions: Option<Vec<u32>>,
    /// What the module needs of the data, as a JSON Schema (written as a
    /// TOML table): the fields it reads and their types.
    #[serde(default)]
    pub contract: Option<Value>,
}

/// `[[produces]]` of a manifest.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Produces {
    /// The event type.
    #[serde(rename = "type")]
    pub ty: String,
    /// The schema version it writes.
    pub version: u32,
    /// The `[[produce]]` topic it writes the type to (needed only when the
    /// module has several; the event catalog places the type by it).
    #[serde(default)]
    pub topic: Option<String>,
}

impl Consumes {
    /// Whether the module reads version `v`.
    pub fn accepts(&self, v: u32) -> bool {
        self.versions.as_ref().is_none_or(|vs| vs.contains(&v))
    }

    /// What in `schema` the contract does not accept (empty without a contract).
    pub fn broken_by(&self, schema: &Value) -> Vec<Incompatibility> {
        match &self.contract {
            Some(c) => sluice_schema::reader_rejects(schema, c),
            None => Vec::new(),
        }
    }
}

/// Every problem of `module`'s contracts against the registered schemas
/// `schemas(type)` (version -> schema).
pub fn problems(
    module: &str,
    consumes: &[Consumes],
    produces: &[Produces],
    schemas: &dyn Fn(&str) -> Option<BTreeMap<u32, Value>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for c in consumes {
        let registered = schemas(&c.ty).unwrap_or_default();
        let accepted: Vec<u32> = registered
            .keys()
            .copied()
            .filter(|v| c.accepts(*v))
            .collect();
        if accepted.is_empty() {
            let wanted = match &c.versions {
                Some(vs) => format!(
                    "versions {}",
                    vs.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
                ),
                None => "any version".into(),
            };
            let have = if registered.is_empty() {
                "no version is registered".to_string()
            } else {
                format!(
                    "registered: {}",
                    registered
                        .keys()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            out.push(format!(
                "module `{module}` consumes `{}` ({wanted}), which no registered schema satisfies ({have})",
                c.ty
            ));
            continue;
        }
        for v in accepted {
            let broken = c.broken_by(&registered[&v]);
            for b in broken {
                out.push(format!(
                    "module `{module}`: version {v} of `{}` can violate its contract at {}: {}",
                    c.ty, b.path, b.message
                ));
            }
        }
    }
    for p in produces {
        let registered = schemas(&p.ty).unwrap_or_default();
        if !registered.contains_key(&p.version) {
            out.push(format!(
                "module `{module}` produces `{}` version {}, which has no registered schema",
                p.ty, p.version
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schemas(ty: &str) -> Option<BTreeMap<u32, Value>> {
        (ty == "order.created").then(|| {
            BTreeMap::from([
                (1, json!({"type": "object", "properties": {"amount": {"type": "integer"}}, "required": ["amount"]})),
                (2, json!({"type": "object", "properties": {"amount": {"type": "number"}}, "required": ["amount"]})),
            ])
        })
    }

    #[test]
    fn a_contract_is_checked_against_each_accepted_version() {
        let reads_integers = Consumes {
            ty: "order.created".into(),
            versions: None,
            contract: Some(
                json!({"type": "object", "properties": {"amount": {"type": "integer"}}, "required": ["amount"]}),
            ),
        };
        let p = problems(
            "totals",
            std::slice::from_ref(&reads_integers),
            &[],
            &schemas,
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("version 2 of `order.created`") && p[0].contains("/properties/amount"),
            "{p:?}"
        );
        let only_v1 = Consumes {
            versions: Some(vec![1]),
            ..reads_integers
        };
        assert!(problems("totals", &[only_v1], &[], &schemas).is_empty());
    }

    #[test]
    fn unsatisfiable_consumers_and_unregistered_outputs_are_named() {
        let c = Consumes {
            ty: "order.created".into(),
            versions: Some(vec![5]),
            contract: None,
        };
        let p = problems(
            "m",
            &[c],
            &[Produces {
                ty: "order.large".into(),
                version: 1,
                topic: None,
            }],
            &schemas,
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].contains("versions 5") && p[0].contains("registered: 1, 2"),
            "{p:?}"
        );
        assert!(p[1].contains("produces `order.large` version 1"), "{p:?}");
    }
}

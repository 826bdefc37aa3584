//! Is a JSON Schema change compatible? The rules a schema registry applies
//! before it accepts a new version of an event type.
//!
//! Sluice's registry (`host/src/schema/`) keeps the versions of each event
//! type; this crate only judges them, with no I/O and no state. Two
//! questions, both answered as a list of [`Incompatibility`] (empty means
//! compatible):
//!
//! - [`reader_rejects`]: does a consumer validating with one schema (the
//!   reader) accept everything a producer validating with another (the
//!   writer) can send? Module contracts use it directly.
//! - [`check`]: may a new version be registered after the earlier ones, in a
//!   compatibility [`Mode`] (`BACKWARD`, `FORWARD`, `FULL`, their
//!   `_TRANSITIVE` forms, `NONE`)?
//!
//! The rules follow Confluent Schema Registry's JSON Schema support (open and
//! closed content models, required properties with defaults) and are
//! conservative: a keyword they do not judge counts as a break when it
//! changes. `docs/schema-compatibility.md` lists the rules and a table of
//! cases that the tests keep in step with the code.
//!
//! ```
//! use serde_json::json;
//! use sluice_schema::{Mode, check};
//!
//! let v1 = json!({"type": "object", "properties": {"amount": {"type": "integer"}}});
//! let v2 = json!({"type": "object", "properties": {"amount": {"type": "number"}}});
//! let previous = [("1".to_string(), v1)];
//!
//! // New readers accept old data: widening integer to number is backward compatible.
//! assert!(check(Mode::Backward, &v2, &previous).is_empty());
//!
//! // Old readers reject the new data's fractions: not forward compatible.
//! let breaks = check(Mode::Forward, &v2, &previous);
//! assert_eq!(breaks[0].path, "/properties/amount/type");
//! assert_eq!(breaks[0].against.as_deref(), Some("1"));
//! ```

mod compat;

pub use compat::{Incompatibility, Mode, ParseModeError, check, reader_rejects};

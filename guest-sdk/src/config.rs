//! The `[config]` table of the module's manifest.
//!
//! String values come back as they are; other TOML values (numbers, booleans,
//! arrays, tables) as JSON text, so [`get_parsed`] reads them into any
//! `Deserialize` type.
//!
//! ```
//! # sluice_guest::testing::TestHost::install().config("min-amount", "100");
//! let min: u64 = sluice_guest::config::get_parsed("min-amount")?.unwrap_or(0);
//! assert_eq!(min, 100);
//! # Ok::<(), sluice_guest::Failure>(())
//! ```

use crate::{Failure, Result, backend};
use serde::de::DeserializeOwned;

/// The raw value of `key`.
pub fn get(key: &str) -> Option<String> {
    backend::config_get(key)
}

/// Every entry, sorted by key.
pub fn all() -> Vec<(String, String)> {
    backend::config_all()
}

/// The value of `key` parsed as `T` (JSON, or a bare string).
pub fn get_parsed<T: DeserializeOwned>(key: &str) -> Result<Option<T>> {
    let Some(raw) = get(key) else { return Ok(None) };
    if let Ok(v) = serde_json::from_str(&raw) {
        return Ok(Some(v));
    }
    serde_json::from_value(serde_json::Value::String(raw.clone()))
        .map(Some)
        .map_err(|e| Failure::Reject(format!("config key `{key}` = {raw:?} does not parse: {e}")))
}

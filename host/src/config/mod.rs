//! Configuration: the host's own config file (with the command line's
//! overrides) and module manifests.
//!
//! Both are TOML, parsed with unknown fields refused; every error names the file
//! and the field (`modules/filter/module.toml: limits.memory: ...`).

pub mod host;
pub mod manifest;
mod overrides;
mod units;

pub use host::{HostConfig, KafkaConfig};
pub use manifest::{Manifest, StartPosition};
pub use overrides::{Overrides, host_config};
pub use units::{parse_duration, parse_size};

/// Format a `toml` deserialization error as `file: field.path: message`.
pub(crate) fn toml_error(file: &std::path::Path, e: &toml::de::Error) -> String {
    format!("{}: {}", file.display(), e.to_string().trim_end())
}

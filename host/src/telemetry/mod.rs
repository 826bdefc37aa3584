//! Logging setup: `tracing` to stderr, filtered by `RUST_LOG` (default `info`),
//! human-readable or JSON lines.

use tracing_subscriber::EnvFilter;

/// Install the global subscriber. Safe to call twice (the second is ignored).
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,wasmtime=warn,cranelift=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

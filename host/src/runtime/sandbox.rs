//! What a module may reach outside its own memory: nothing. The WASI
//! context of every instance is built from one policy value, and the API
//! reports that same value.

use std::sync::Arc;

use wasmtime_wasi::WasiCtx;

use super::stdio;

/// What a module's sandbox grants. The WASI context of every instance is
/// built from [`Sandbox::DENY_ALL`] (`Sandbox::wasi`), and
/// `GET /v1/modules/{name}` reports the same value, so the report is what
/// was applied.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sandbox {
    /// Host directories preopened for the guest.
    pub directories: Vec<String>,
    /// Whether sockets and name lookups are allowed.
    pub network: bool,
    /// Environment variables given.
    pub environment: std::collections::BTreeMap<String, String>,
    /// Command-line arguments given.
    pub arguments: Vec<String>,
    /// Where the guest's stdin, stdout and stderr go.
    pub stdin: &'static str,
    pub stdout_stderr: &'static str,
    /// WASI interfaces not in the linker at all.
    pub not_linked: &'static [&'static str],
}

impl Sandbox {
    /// Nothing: no directories, network, environment or arguments.
    pub const DENY_ALL: Sandbox = Sandbox {
        directories: Vec::new(),
        network: false,
        environment: std::collections::BTreeMap::new(),
        arguments: Vec::new(),
        stdin: "empty",
        stdout_stderr: "host log",
        not_linked: &["wasi:http"],
    };

    /// The WASI context this sandbox describes, with the guest's output
    /// streams going to the host log.
    pub(super) fn wasi(&self, module: &Arc<str>) -> WasiCtx {
        let mut wasi = WasiCtx::builder();
        wasi.allow_tcp(self.network)
            .allow_udp(self.network)
            .allow_ip_name_lookup(self.network);
        for (k, v) in &self.environment {
            wasi.env(k, v);
        }
        wasi.args(&self.arguments);
        // No preopens: `directories` stays empty (none are added here).
        wasi.stdout(stdio::LogStream::new(module.clone(), "stdout"));
        wasi.stderr(stdio::LogStream::new(module.clone(), "stderr"));
        wasi.build()
    }

    /// The report `GET /v1/modules/{name}` shows.
    pub fn report(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("serializes");
        v["network"] = if self.network { "allowed" } else { "denied" }.into();
        v
    }
}

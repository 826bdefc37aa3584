//! Observability test helpers: scraping `/metrics`, reading one series of
//! Prometheus text, a child process killed by PID when dropped (Prometheus,
//! the browser driver), and an OTLP/HTTP receiver that decodes the spans a
//! host exports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

/// The repository's root: above this crate as `cargo test` runs it (set at
/// run time), else as it was built (a test binary built in another
/// checkout of the same sources may be reused from a shared target
/// directory).
pub fn repo() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `GET addr/metrics` as text.
pub fn scrape(addr: &str) -> String {
    ureq::get(&format!("{addr}/metrics"))
        .call()
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"))
        .into_string()
        .unwrap()
}

/// The value of the one series of `name` whose labels include `labels`
/// (`None`: no such series; two matches are a test bug and panic).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let (n, set) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name {
            continue;
        }
        let has = |k: &str, v: &str| set.split(',').any(|kv| kv == format!("{k}=\"{v}\""));
        if labels.iter().all(|(k, v)| has(k, v)) {
            assert!(
                found.is_none(),
                "two series of {name} match {labels:?}:\n{text}"
            );
            found = Some(value.parse::<f64>().unwrap());
        }
    }
    found
}

/// A process killed (by PID) and reaped when dropped.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run a driver script that prints its findings as one JSON line last;
/// panic with its output if it fails.
pub fn json_line(cmd: &mut std::process::Command) -> serde_json::Value {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{cmd:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("{cmd:?} printed no JSON line ({e}): {stdout}"))
}

/// The directory `scripts/<script> dir` installs into (and prints).
pub fn tools_dir(script: &str) -> PathBuf {
    let out = std::process::Command::new(repo().join("scripts").join(script))
        .arg("dir")
        .output()
        .unwrap_or_else(|e| panic!("scripts/{script}: {e}"));
    assert!(
        out.status.success(),
        "scripts/{script} dir: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A command every observability test needs, or a panic saying how to get it.
pub fn tool(name: &str, how: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| panic!("`{name}` is not installed: {how}"))
}

/// An OTLP/HTTP trace receiver on loopback: what the host exports to
/// `/v1/traces`, decoded.
pub struct Receiver {
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
    received: Arc<std::sync::atomic::AtomicU64>,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    /// Listen on a free loopback port, keeping every span.
    pub fn start() -> Receiver {
        Receiver::listen(true)
    }

    /// Listen on a free loopback port, counting spans and dropping them
    /// (benchmarks).
    pub fn start_discarding() -> Receiver {
        Receiver::listen(false)
    }

    fn listen(keep: bool) -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let received: Arc<std::sync::atomic::AtomicU64> = Arc::default();
        let sink = spans.clone();
        let count = received.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let sink = sink.clone();
                let count = count.clone();
                async move {
                    let req = ExportTraceServiceRequest::decode(body.as_ref())
                        .expect("an ExportTraceServiceRequest in protobuf");
                    let spans = req
                        .resource_spans
                        .into_iter()
                        .flat_map(|rs| rs.scope_spans)
                        .flat_map(|ss| ss.spans);
                    if keep {
                        sink.lock().unwrap().extend(spans);
                    } else {
                        count.fetch_add(spans.count() as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move { axum::serve(listener, app).await });
        Receiver {
            addr,
            spans,
            received,
            _runtime: runtime,
        }
    }

    /// How many spans a discarding receiver got.
    pub fn received(&self) -> u64 {
        self.received.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// Wait until `f` finds what it wants in the spans received.
    pub fn wait<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut f: impl FnMut(&[Span]) -> Option<T>,
    ) -> T {
        crate::wait_for(timeout, what, || f(&self.spans()))
    }
}

/// A span's string (or integer, as text) attribute.
pub fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            any_value::Value::IntValue(i) => Some(i.to_string()),
            other => Some(format!(
                "{:?}",
                AnyValue {
                    value: Some(other.clone())
                }
            )),
        })
}

/// Lowercase hex of an id.
pub fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// `f` until it answers, or `None` after `timeout`.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

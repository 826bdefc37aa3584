//! Test harness: guest modules built from source (see `build.rs`), real `sluice`
//! host processes on loopback, and a small client of their HTTP API.
//!
//! Every process a test starts is owned by a [`HostProc`], which kills it by PID
//! when dropped. Waits are for a condition with a deadline, never a fixed sleep.

pub mod bench;
pub mod kafka;
pub mod obs;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use sluice::ModuleInfo;

/// The API token every test host is configured with.
pub const TOKEN: &str = "sluice-test-token-0123456789";

/// Directory holding one staged sub-directory per guest module.
pub fn staged_modules() -> PathBuf {
    PathBuf::from(env!("SLUICE_GUEST_MODULES"))
}

/// Path of a staged module's component.
pub fn component(name: &str) -> PathBuf {
    staged_modules().join(name).join(format!("{name}.wasm"))
}

/// The compiled-component cache test hosts share: beside the staged modules.
pub fn shared_compile_cache() -> PathBuf {
    staged_modules().with_file_name("compiled-cache")
}

/// Copy the named staged modules into `dir` (a host's modules directory).
pub fn stage(dir: &Path, names: &[&str]) {
    for n in names {
        let to = dir.join(n);
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(staged_modules().join(n)).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
        }
    }
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The host binary under test: `sluice-test-host`, which cargo builds from the
/// host's `main.rs` next to the test executables (`<target>/<profile>/`).
pub fn sluice_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .ancestors()
        .skip(1)
        .map(|d| d.join(format!("sluice-test-host{}", std::env::consts::EXE_SUFFIX)))
        .find(|p| p.is_file());
    bin.unwrap_or_else(|| {
        panic!(
            "sluice-test-host not found above {}; build it with `cargo test -p sluice-tests`",
            exe.display()
        )
    })
}

/// What one run of the `sluice` CLI printed, and whether it succeeded.
pub struct CliRun {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Run the `sluice` binary with `args`; client commands talk to `addr` if given.
pub fn sluice<S: AsRef<std::ffi::OsStr>>(args: &[S], addr: Option<&str>) -> CliRun {
    let mut cmd = Command::new(sluice_bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .env("SLUICE_API_TOKEN", TOKEN);
    if let Some(addr) = addr {
        cmd.env("SLUICE_ADDR", addr);
    }
    let out = cmd.output().expect("cannot run sluice");
    CliRun {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Poll `f` until it returns `Some`, or panic after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `sluice run` process with its own data directory and port.
pub struct HostProc {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub addr: String,
    pub port: u16,
    log_path: PathBuf,
    starts: u32,
}

impl HostProc {
    /// Write a config (with `extra` TOML appended) and start the host on the
    /// modules staged into `<dir>/modules` by `setup`.
    pub fn start(extra: &str, setup: impl FnOnce(&Path)) -> HostProc {
        let dir = tempfile::tempdir().unwrap();
        let modules = dir.path().join("modules");
        std::fs::create_dir_all(&modules).unwrap();
        setup(&modules);
        let port = free_port();
        let config = dir.path().join("sluice.toml");
        // Test hosts share one compiled-component cache (the JavaScript and
        // Python components take seconds each to compile), unless the test
        // configures [deploy] itself.
        let shared_cache = if extra.contains("[deploy]") {
            String::new()
        } else {
            format!(
                "[deploy]\ncompile-cache-dir = \"{}\"\n",
                shared_compile_cache().display()
            )
        };
        std::fs::write(
            &config,
            format!("data-dir = \"data\"\nmodules-dir = \"modules\"\n[api]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{TOKEN}\"\n{extra}\n{shared_cache}"),
        )
        .unwrap();
        let log_path = dir.path().join("host.log");
        let mut h = HostProc {
            child: None,
            addr: format!("http://127.0.0.1:{port}"),
            port,
            config,
            dir,
            log_path,
            starts: 0,
        };
        h.spawn();
        h
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let child = Command::new(sluice_bin())
            .args(["run", "--config"])
            .arg(&self.config)
            .env(
                "RUST_LOG",
                std::env::var("SLUICE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start the sluice host");
        self.child = Some(child);
        let addr = self.addr.clone();
        let log_path = self.log_path.clone();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // Ready: modules loaded (failed ones reported), sources reachable.
            if get(&addr, "/readyz").is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "host exited during start ({status}); log:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "host was not ready (/readyz) within 60s; log:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL the host (by PID) and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM the host and wait for it to exit; returns its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let pid = c.id() as libc::pid_t;
        // SAFETY: kill(2) on the PID of a child we own and have not reaped.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        // The host may take its whole shutdown-timeout (30 s by default) to
        // drain: wait past it, so a slow drain on a loaded machine is told
        // from a hang.
        let deadline = Instant::now() + Duration::from_secs(45);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                if s.code() != Some(0) {
                    eprintln!(
                        "host exited with {s} after SIGTERM; its log ends:\n{}",
                        self.log_tail(200)
                    );
                }
                return s.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!(
                    "host did not exit within 45s of SIGTERM; its log ends:\n{}",
                    self.log_tail(60)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last `n` lines of the host's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let tail: Vec<&str> = log.lines().rev().take(n).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Start the host again on the same data directory.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// How many times the process was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// The host's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Peak resident memory of the host process so far (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let pid = self.child.as_ref().expect("host running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .expect("VmHWM in /proc/pid/status");
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    /// Send `signal` (`libc::SIGSTOP`, `libc::SIGCONT`, ...) to the host
    /// process, by its PID.
    pub fn signal(&self, signal: i32) {
        let pid = self.child.as_ref().expect("host running").id() as libc::pid_t;
        // SAFETY: kill(2) on the PID of a child we own and have not reaped.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, signal);
        }
    }

    /// Whether the process is running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Run a `sluice` client command against this host.
    pub fn cli(&self, args: &[&str]) -> CliRun {
        sluice(args, Some(&self.addr))
    }

    /// `GET path` as JSON.
    pub fn get(&self, path: &str) -> Value {
        get(&self.addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Append events (a JSON array); panics on refusal.
    pub fn produce(&self, topic: &str, events: &Value) -> Value {
        produce(&self.addr, topic, events).unwrap_or_else(|e| panic!("produce to {topic}: {e}"))
    }

    /// Every event a topic holds, all partitions.
    pub fn read_all(&self, topic: &str) -> Vec<Value> {
        read_all(&self.addr, topic)
    }

    /// The module list.
    pub fn modules(&self) -> Vec<ModuleInfo> {
        serde_json::from_value(self.get("/v1/modules")).unwrap()
    }

    /// One module.
    pub fn module(&self, name: &str) -> ModuleInfo {
        self.modules()
            .into_iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no module {name}"))
    }

    /// A module's state: `(key, value)`.
    pub fn state(&self, module: &str) -> Vec<(String, Value)> {
        let v = self.get(&format!("/v1/modules/{module}/state?limit=1000000"));
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| (e["key"].as_str().unwrap().to_string(), e["value"].clone()))
            .collect()
    }

    /// Orders the aggregator module has applied: the sum of its
    /// per-customer counts (`None` while the host does not answer).
    pub fn aggregator_applied(&self) -> Option<u64> {
        let v = get(&self.addr, "/v1/modules/aggregator/state?limit=10000").ok()?;
        Some(
            v.as_array()?
                .iter()
                .filter_map(|e| e["value"]["count"].as_u64())
                .sum(),
        )
    }

    /// The partitions of `module` this host holds now (on Kafka: not those
    /// it lists because another member, or nobody, holds them).
    pub fn held(&self, module: &str) -> Vec<u32> {
        self.module(module)
            .partitions
            .iter()
            .filter(|p| p.holder == sluice::Holder::Here)
            .map(|p| p.partition)
            .collect()
    }

    /// The aggregator module's state: one `total/<customer>` entry per
    /// customer, each with the expected total and count (as [`orders`]
    /// computes them).
    pub fn assert_aggregator_totals(
        &self,
        expected: &std::collections::BTreeMap<String, (i64, u64)>,
    ) {
        self.assert_totals_of("aggregator", expected);
    }

    /// [`HostProc::assert_aggregator_totals`] for an aggregator deployed
    /// under another name (or written in another language).
    pub fn assert_totals_of(
        &self,
        module: &str,
        expected: &std::collections::BTreeMap<String, (i64, u64)>,
    ) {
        let state: std::collections::BTreeMap<String, Value> =
            self.state(module).into_iter().collect();
        assert_eq!(state.len(), expected.len(), "one state entry per customer");
        for (c, (total, count)) in expected {
            let v = &state[&format!("total/{c}")];
            assert_eq!(v["total"].as_i64(), Some(*total), "total of {c}");
            assert_eq!(v["count"].as_u64(), Some(*count), "count of {c}");
        }
    }

    /// Wait until `module` has no lag on any partition.
    pub fn wait_caught_up(&self, module: &str, timeout: Duration) {
        wait_for(timeout, &format!("module {module} to catch up"), || {
            let m = self.module(module);
            (!m.partitions.is_empty() && m.partitions.iter().all(|p| p.lag == 0)).then_some(())
        })
    }
}

impl Drop for HostProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build()
}

/// `req` with the test hosts' bearer token.
pub fn authed(req: ureq::Request) -> ureq::Request {
    req.set("Authorization", &format!("Bearer {TOKEN}"))
}

/// `GET addr+path` as JSON (or text wrapped in a JSON string).
pub fn get(addr: &str, path: &str) -> Result<Value, String> {
    let resp = agent()
        .get(&format!("{addr}{path}"))
        .call()
        .map_err(|e| e.to_string())?;
    let mut s = String::new();
    resp.into_reader()
        .read_to_string(&mut s)
        .map_err(|e| e.to_string())?;
    Ok(serde_json::from_str(&s).unwrap_or(Value::String(s)))
}

/// `POST` events; `Err` holds `(status, body)` as text.
pub fn produce(addr: &str, topic: &str, events: &Value) -> Result<Value, String> {
    match authed(agent().post(&format!("{addr}/v1/topics/{topic}/events")))
        .send_json(events.clone())
    {
        Ok(r) => r.into_json().map_err(|e| e.to_string()),
        Err(ureq::Error::Status(code, r)) => {
            Err(format!("{code} {}", r.into_string().unwrap_or_default()))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// `POST` a raw body; returns `(status, JSON body)`.
pub fn post_raw(addr: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
    let r = authed(agent().post(&format!("{addr}{path}")))
        .set("content-type", content_type)
        .send_bytes(body);
    let (code, resp) = match r {
        Ok(r) => (r.status(), r),
        Err(ureq::Error::Status(code, r)) => (code, r),
        Err(e) => panic!("POST {path}: {e}"),
    };
    (code, resp.into_json().unwrap_or(Value::Null))
}

/// Every event a topic holds.
pub fn read_all(addr: &str, topic: &str) -> Vec<Value> {
    let topics = get(addr, "/v1/topics").unwrap();
    let t = topics
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == topic)
        .unwrap_or_else(|| panic!("no topic {topic}"));
    let mut out = Vec::new();
    for p in t["partitions"].as_array().unwrap() {
        let part = p["partition"].as_u64().unwrap();
        let mut from = p["first"].as_u64().unwrap();
        loop {
            let v = get(
                addr,
                &format!("/v1/topics/{topic}/partitions/{part}/events?from={from}&limit=10000"),
            )
            .unwrap();
            let evs = v["events"].as_array().unwrap();
            if evs.is_empty() {
                break;
            }
            out.extend(evs.iter().cloned());
            from = v["next"].as_u64().unwrap();
        }
    }
    out
}

/// Deterministic order events for `n` orders over `customers` customers:
/// `(events as JSON, expected (total, count) per customer)`.
pub fn orders(
    n: usize,
    customers: usize,
    seed: u64,
    id_prefix: &str,
) -> (Vec<Value>, std::collections::BTreeMap<String, (i64, u64)>) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut expected = std::collections::BTreeMap::new();
    let events = (0..n)
        .map(|i| {
            let c = format!("c{}", rng.random_range(0..customers));
            let amount: i64 = rng.random_range(-50..1000);
            let e = expected.entry(c.clone()).or_insert((0i64, 0u64));
            e.0 += amount;
            e.1 += 1;
            serde_json::json!({
                "specversion": "1.0", "id": format!("{id_prefix}{i}"), "source": "/test/orders",
                "type": "order.created", "partitionkey": c,
                "data": {"customer": c, "amount": amount},
            })
        })
        .collect();
    (events, expected)
}

/// `wasm` with a custom section appended: the same component, another hash
/// (so each copy is compiled and cached on its own).
pub fn with_custom_section(wasm: &[u8], name: &str, payload_len: usize) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    let mut body = Vec::new();
    leb(name.len(), &mut body);
    body.extend_from_slice(name.as_bytes());
    body.resize(body.len() + payload_len, 0x5a);
    let mut out = wasm.to_vec();
    out.push(0);
    leb(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

/// A staged module's manifest with `name` and `version` replaced (when
/// given) and `extra` appended.
pub fn manifest_text(
    staged: &str,
    name: Option<&str>,
    version: Option<&str>,
    extra: &str,
) -> String {
    let text = std::fs::read_to_string(staged_modules().join(staged).join("module.toml")).unwrap();
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| match (name, version) {
            (Some(n), _) if l.starts_with("name") => format!("name = \"{n}\""),
            (_, Some(v)) if l.starts_with("version") => format!("version = \"{v}\""),
            _ => l.to_string(),
        })
        .collect();
    if !extra.is_empty() {
        lines.push(extra.to_string());
    }
    lines.join("\n") + "\n"
}

/// The staged module's component file.
pub fn component_bytes(staged: &str) -> Vec<u8> {
    let dir = staged_modules().join(staged);
    let wasm = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "wasm"))
        .unwrap_or_else(|| panic!("no component in {}", dir.display()));
    std::fs::read(wasm).unwrap()
}

/// The body of `POST /v1/modules`.
pub fn deploy_body(manifest: &str, component: &[u8]) -> Value {
    use base64::Engine as _;
    serde_json::json!({
        "manifest": manifest,
        "component": base64::engine::general_purpose::STANDARD.encode(component),
    })
}

/// A request to the API, with `token` as bearer if given: `(status, JSON body)`.
pub fn api(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let mut req = agent().request(method, &format!("{addr}{path}"));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let r = match body {
        Some(b) => req.send_json(b.clone()),
        None => req.call(),
    };
    let (code, resp) = match r {
        Ok(r) => (r.status(), r),
        Err(ureq::Error::Status(code, r)) => (code, r),
        Err(e) => panic!("{method} {path}: {e}"),
    };
    let text = resp.into_string().unwrap_or_default();
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Write a module directory `dir/<name>` from a staged module, renamed, its
/// component padded with a custom section of `pad` bytes (0: unchanged).
pub fn stage_renamed(dir: &Path, staged: &str, name: &str, pad: usize) {
    let to = dir.join(name);
    std::fs::create_dir_all(&to).unwrap();
    let manifest = manifest_text(staged, Some(name), None, "").replace(
        &format!("component = \"{staged}.wasm\""),
        "component = \"module.wasm\"",
    );
    let mut wasm = component_bytes(staged);
    if pad > 0 {
        wasm = with_custom_section(&wasm, "sluice-test-pad", pad);
    }
    std::fs::write(to.join("module.wasm"), wasm).unwrap();
    std::fs::write(to.join("module.toml"), manifest).unwrap();
}

/// A benchmark's size from the environment variable `var` (else `default`),
/// or `None` when cargo only probes the bench target (`--list`, as
/// `cargo test --benches` does) and nothing should run.
pub fn bench_size(var: &str, default: usize) -> Option<usize> {
    if std::env::args().any(|a| a == "--list") {
        return None;
    }
    Some(
        std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default),
    )
}

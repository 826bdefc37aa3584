//! Module lifecycle in a running host: hot deploys that leave other modules
//! alone, upgrades and rollbacks that keep state, the watched modules
//! directory, rewinds, the compiled cache, and graceful stop.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::*;

const ORDERS_TOPIC: &str = "[[topics]]\nname = \"orders\"\npartitions = 3\n";

/// Sum of a module's cursors on one topic.
fn cursor_sum(host: &HostProc, module: &str, topic: &str) -> u64 {
    host.module(module)
        .partitions
        .iter()
        .filter(|p| p.topic == topic)
        .map(|p| p.cursor)
        .sum()
}

/// Expected `(total, count)` per customer of some order events.
fn totals_of(events: &[Value]) -> BTreeMap<String, (i64, u64)> {
    let mut m = BTreeMap::new();
    for e in events {
        let c = e["data"]["customer"].as_str().unwrap().to_string();
        let t = m.entry(c).or_insert((0i64, 0u64));
        t.0 += e["data"]["amount"].as_i64().unwrap();
        t.1 += 1;
    }
    m
}

/// Produces `events` in chunks on its own thread until they run out or it is
/// told to stop; counts what the host accepted.
struct Stream {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Stream {
    fn start(addr: &str, events: Vec<Value>, chunk: usize, pause: Duration) -> Stream {
        let (stop, sent) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (s, n, addr) = (stop.clone(), sent.clone(), addr.to_string());
        let thread = std::thread::spawn(move || {
            for c in events.chunks(chunk) {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                // A refused or failed request ends the stream (the host is stopping).
                if produce(&addr, "orders", &Value::Array(c.to_vec())).is_err() {
                    return;
                }
                n.fetch_add(c.len(), Ordering::SeqCst);
                std::thread::sleep(pause);
            }
        });
        Stream {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    /// Stop and return how many events were accepted.
    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.sent()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn deploy(host: &HostProc, manifest: &str, component: &[u8]) -> Value {
    let (code, v) = api(
        &host.addr,
        "POST",
        "/v1/modules",
        Some(&deploy_body(manifest, component)),
        Some(TOKEN),
    );
    assert_eq!(code, 200, "deploy refused: {v}");
    v
}

#[test]
fn deploys_upgrades_and_undeploys_never_stop_another_module() {
    let host = HostProc::start(ORDERS_TOPIC, |m| stage(m, &["aggregator"]));
    let (events, _) = orders(40_000, 50, 11, "ind-");
    let stream = Stream::start(&host.addr, events.clone(), 25, Duration::from_millis(30));
    wait_for(
        Duration::from_secs(30),
        "the aggregator to start applying",
        || (cursor_sum(&host, "aggregator", "orders") > 0).then_some(()),
    );
    let router = component_bytes("router");
    let mut last = cursor_sum(&host, "aggregator", "orders");
    let mut seen = vec![last];
    // Each operation, then: the aggregator's committed offset moved past
    // where it was before the operation.
    let mut step = |what: &str, op: &mut dyn FnMut()| {
        let produced = stream.sent();
        op();
        wait_for(
            Duration::from_secs(30),
            &format!("the aggregator to advance after {what}"),
            || {
                let c = cursor_sum(&host, "aggregator", "orders");
                (c > last && stream.sent() > produced).then_some(c)
            },
        );
        last = cursor_sum(&host, "aggregator", "orders");
        seen.push(last);
    };
    for i in 1..=20 {
        let name = format!("f{i:02}");
        let manifest = manifest_text("router", Some(&name), None, "")
            .replace("start = \"earliest\"", "start = \"latest\"");
        step(&format!("deploying {name}"), &mut || {
            let v = deploy(&host, &manifest, &router);
            assert_eq!(v["action"], "deployed", "{v}");
        });
    }
    // Upgrade f05 (a new version), roll it back, undeploy f07.
    let v2 = manifest_text("router", Some("f05"), Some("0.2.0"), "")
        .replace("start = \"earliest\"", "start = \"latest\"");
    step("upgrading f05", &mut || {
        let v = deploy(&host, &v2, &router);
        assert_eq!(v["action"], "upgraded", "{v}");
        assert_eq!(v["previous"], "0.1.0", "{v}");
    });
    step("rolling f05 back", &mut || {
        let r = host.cli(&["rollback", "f05"]);
        assert!(r.ok, "{}", r.stderr);
        assert!(
            r.stderr.contains("rolled-back f05: 0.2.0 -> 0.1.0"),
            "{}",
            r.stderr
        );
    });
    step("undeploying f07", &mut || {
        let r = host.cli(&["undeploy", "f07"]);
        assert!(r.ok, "{}", r.stderr);
    });
    let sent = stream.finish();
    eprintln!("aggregator committed offsets between operations: {seen:?}");
    assert!(seen.windows(2).all(|w| w[1] > w[0]), "{seen:?}");

    let agg = host.module("aggregator");
    let starts = agg.metrics.as_ref().unwrap().starts;
    assert_eq!(starts, 1, "the aggregator's pipeline was never restarted");
    host.wait_caught_up("aggregator", Duration::from_secs(120));
    host.assert_aggregator_totals(&totals_of(&events[..sent]));
    assert_eq!(host.read_all("totals").len(), sent, "one output per input");

    let mods = host.modules();
    assert_eq!(mods.len(), 20, "aggregator + 20 routers - f07");
    assert!(mods.iter().all(|m| m.status == "running"), "{mods:?}");
    assert!(!mods.iter().any(|m| m.name == "f07"));
    let f05 = host.get("/v1/modules/f05");
    assert_eq!(f05["version"], "0.1.0");
    assert_eq!(f05["revisions"].as_array().unwrap().len(), 3, "{f05}");
    // 20 routers, one component: stored once.
    assert_eq!(
        std::fs::read_dir(host.dir.path().join("data/components"))
            .unwrap()
            .count(),
        2,
        "aggregator + router"
    );
}

fn clicks(prefix: &str, n: usize, keys: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({"specversion": "1.0", "id": format!("{prefix}{i}"), "source": "/test/clicks",
                   "type": "click", "partitionkey": format!("k{}", i % keys), "data": {}})
        })
        .collect()
}

fn produce_clicks(host: &HostProc, events: &[Value]) {
    for c in events.chunks(500) {
        produce(&host.addr, "clicks", &Value::Array(c.to_vec())).unwrap();
    }
}

/// `count/<key>` state of the counter module.
fn counts(host: &HostProc, module: &str) -> BTreeMap<String, u64> {
    host.state(module)
        .into_iter()
        .map(|(k, v)| (k, v.as_u64().unwrap()))
        .collect()
}

/// Counts after batches of `sizes` events made by [`clicks`].
fn expected_counts(sizes: &[usize], keys: usize) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for n in sizes {
        for i in 0..*n {
            *m.entry(format!("count/k{}", i % keys)).or_insert(0) += 1;
        }
    }
    m
}

#[test]
fn an_upgrade_keeps_state_and_a_rollback_continues_from_it() {
    let host = HostProc::start("[[topics]]\nname = \"clicks\"\npartitions = 2\n", |_| {});
    let v1 = staged_modules().join("counter");
    let r = host.cli(&["deploy", v1.to_str().unwrap()]);
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stderr.contains("deployed counter 0.1.0 (revision 1)"),
        "{}",
        r.stderr
    );

    produce_clicks(&host, &clicks("a", 600, 7));
    host.wait_caught_up("counter", Duration::from_secs(60));
    assert_eq!(counts(&host, "counter"), expected_counts(&[600], 7));

    let v2 = staged_modules().join("counter-v2");
    let r = host.cli(&["deploy", v2.to_str().unwrap()]);
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("upgraded counter: 0.1.0 -> 0.2.0 (revision 2)"),
        "{}",
        r.stderr
    );
    produce_clicks(&host, &clicks("b", 600, 7));
    host.wait_caught_up("counter", Duration::from_secs(60));
    assert_eq!(counts(&host, "counter"), expected_counts(&[600, 600], 7));

    let r = host.cli(&["rollback", "counter", "--to", "0.1.0"]);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(host.module("counter").version.as_deref(), Some("0.1.0"));
    produce_clicks(&host, &clicks("c", 300, 7));
    host.wait_caught_up("counter", Duration::from_secs(60));
    assert_eq!(
        counts(&host, "counter"),
        expected_counts(&[600, 600, 300], 7)
    );

    // Each input was handled once, by the version that ran at the time, and
    // the counts run on across the versions without a gap or a repeat.
    let out = host.read_all("counts");
    assert_eq!(out.len(), 1500);
    let mut by_key: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for e in &out {
        let (key, n) = match e["type"].as_str().unwrap() {
            "count.updated" => (e["data"]["key"].clone(), e["data"]["count"].clone()),
            "count.updated.v2" => {
                assert_eq!(e["data"]["format"], 2);
                (
                    e["data"]["counter"]["name"].clone(),
                    e["data"]["counter"]["value"].clone(),
                )
            }
            other => panic!("unexpected output type {other}"),
        };
        by_key
            .entry(key.as_str().unwrap().to_string())
            .or_default()
            .push((n.as_u64().unwrap(), e["type"].as_str().unwrap().to_string()));
    }
    let mut v2_outputs = 0;
    for (key, mut seq) in by_key {
        seq.sort();
        let ns: Vec<u64> = seq.iter().map(|s| s.0).collect();
        assert_eq!(
            ns,
            (1..=ns.len() as u64).collect::<Vec<_>>(),
            "counts of {key}"
        );
        // Per key, the formats go v1, then v2, then v1 again.
        let kinds: Vec<&str> = seq.iter().map(|s| s.1.as_str()).collect();
        let mut runs = kinds.clone();
        runs.dedup();
        assert_eq!(
            runs,
            ["count.updated", "count.updated.v2", "count.updated"],
            "{key}"
        );
        v2_outputs += kinds.iter().filter(|k| **k == "count.updated.v2").count();
    }
    assert_eq!(
        v2_outputs, 600,
        "the 600 events of the second batch went to v2"
    );
    let detail = host.get("/v1/modules/counter");
    let revs: Vec<&str> = detail["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_str().unwrap())
        .collect();
    assert_eq!(revs, ["0.1.0", "0.2.0", "0.1.0"]);
}

#[test]
fn a_module_copied_in_slowly_is_deployed_once_and_complete() {
    let host = HostProc::start(
        "[[topics]]\nname = \"clicks\"\npartitions = 2\n[deploy]\nwatch-interval = \"200ms\"\n",
        |_| {},
    );
    let dir = host.dir.path().join("modules/counter");
    std::fs::create_dir_all(&dir).unwrap();
    // The manifest first, then the component in pieces, each written while
    // the watcher scans.
    let manifest = manifest_text("counter", None, None, "");
    std::fs::write(dir.join("module.toml"), &manifest).unwrap();
    let wasm = component_bytes("counter");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(dir.join("counter.wasm")).unwrap();
        for piece in wasm.chunks(wasm.len() / 6 + 1) {
            f.write_all(piece).unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_millis(150));
        }
    }
    wait_for(
        Duration::from_secs(30),
        "the watcher to deploy counter",
        || {
            host.modules()
                .into_iter()
                .find(|m| m.name == "counter" && m.status == "running")
        },
    );
    produce_clicks(&host, &clicks("w", 200, 3));
    host.wait_caught_up("counter", Duration::from_secs(60));
    assert_eq!(counts(&host, "counter"), expected_counts(&[200], 3));
    // Several more scans: nothing is deployed again.
    std::thread::sleep(Duration::from_millis(1000));
    let revisions = host.get("/v1/modules/counter")["revisions"].clone();
    assert_eq!(revisions.as_array().unwrap().len(), 1, "{revisions}");

    // A new version written into the same directory is an upgrade.
    let v2 = manifest_text("counter-v2", None, None, "");
    std::fs::write(dir.join("counter.wasm"), component_bytes("counter-v2")).unwrap();
    std::fs::write(dir.join("module.toml"), v2).unwrap();
    wait_for(
        Duration::from_secs(30),
        "the watcher to upgrade counter",
        || (host.module("counter").version.as_deref() == Some("0.2.0")).then_some(()),
    );
    assert_eq!(
        counts(&host, "counter"),
        expected_counts(&[200], 3),
        "state kept"
    );
    let log = host.log();
    assert_eq!(log.matches("module deployed").count(), 1, "{log}");
    assert_eq!(log.matches("module upgraded").count(), 1, "{log}");
}

#[test]
fn rewind_skips_applied_events_or_rebuilds_state_from_history() {
    rewind_scenario(ORDERS_TOPIC);
}

#[test]
fn kafka_rewind_skips_applied_events_or_rebuilds_state_from_history() {
    let broker = sluice_tests::kafka::Broker::start(sluice_tests::kafka::Storage::Memory);
    rewind_scenario(&format!("{ORDERS_TOPIC}{}", broker.host_config()));
}

/// Rewind without and with `--reset-state`, on the backend `config` names.
fn rewind_scenario(config: &str) {
    let host = HostProc::start(config, |m| stage(m, &["aggregator"]));
    let (first, _) = orders(1500, 20, 21, "rw1-");
    let (second, _) = orders(1500, 20, 22, "rw2-");
    produce(&host.addr, "orders", &Value::Array(first.clone())).unwrap();
    host.wait_caught_up("aggregator", Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(20));
    let middle = time_now_rfc3339();
    std::thread::sleep(Duration::from_millis(20));
    produce(&host.addr, "orders", &Value::Array(second.clone())).unwrap();
    host.wait_caught_up("aggregator", Duration::from_secs(60));
    let all: Vec<Value> = first.iter().chain(&second).cloned().collect();
    host.assert_aggregator_totals(&totals_of(&all));
    let before = host.state("aggregator");
    let dedup0 = host.module("aggregator").metrics.unwrap().dedup_hits;

    // Without --reset-state: everything read again is a dedup hit.
    let r = host.cli(&["rewind", "aggregator", "--to", "earliest"]);
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stderr.contains("3000 events to read again"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("100% 3000/3000"),
        "progress: {}",
        r.stderr
    );
    host.wait_caught_up("aggregator", Duration::from_secs(60));
    assert_eq!(host.state("aggregator"), before, "state unchanged");
    let m = host.module("aggregator").metrics.unwrap();
    assert_eq!(m.dedup_hits - dedup0, 3000);
    assert_eq!(host.read_all("totals").len(), 3000, "nothing emitted again");

    // With --reset-state from the middle: the state is a fresh run over the
    // second half of the history.
    let r = host.cli(&["rewind", "aggregator", "--to", &middle, "--reset-state"]);
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stderr.contains("1500 events to read again"),
        "{}",
        r.stderr
    );
    host.wait_caught_up("aggregator", Duration::from_secs(60));
    host.assert_aggregator_totals(&totals_of(&second));

    // And from the start: a fresh run over everything, equal to the state before.
    let r = host.cli(&["rewind", "aggregator", "--to", "earliest", "--reset-state"]);
    assert!(r.ok, "{}", r.stderr);
    host.wait_caught_up("aggregator", Duration::from_secs(60));
    assert_eq!(host.state("aggregator"), before);
}

fn time_now_rfc3339() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    sluice::source::rfc3339_of_ms(ms)
}

#[test]
fn a_restart_with_twenty_modules_takes_them_from_the_compiled_cache() {
    // Its own cache (in its data directory), not the one test hosts share.
    let extra = format!("{ORDERS_TOPIC}[deploy]\ncompile-cache = true\n");
    let mut host = HostProc::start(&extra, |m| {
        for i in 0..20 {
            // Twenty different components (a custom section makes each unique).
            stage_renamed(m, "aggregator", &format!("agg{i:02}"), 16 + i);
        }
    });
    let first = host.get("/readyz");
    assert_eq!(first["modules"], 20, "{first}");
    assert_eq!(first["compiled_cache"]["misses"], 20, "{first}");
    let (events, expected) = orders(300, 10, 31, "cc-");
    produce(&host.addr, "orders", &Value::Array(events)).unwrap();
    host.restart();
    let again = host.get("/readyz");
    assert_eq!(again["modules"], 20, "{again}");
    assert_eq!(again["compiled_cache"]["hits"], 20, "{again}");
    assert_eq!(again["compiled_cache"]["misses"], 0, "{again}");
    eprintln!(
        "startup: {} ms compiling, {} ms from the cache",
        first["startup_ms"], again["startup_ms"]
    );
    for i in [0, 19] {
        let name = format!("agg{i:02}");
        host.wait_caught_up(&name, Duration::from_secs(60));
        let m = host.module(&name);
        assert_eq!(
            m.revision,
            Some(1),
            "restored from the registry, not redeployed"
        );
    }
    let totals: BTreeMap<String, (i64, u64)> = expected;
    let state = host.state("agg19");
    assert_eq!(state.len(), totals.len());
}

#[test]
fn mutations_need_the_token_and_bad_deploys_change_nothing() {
    // (`extra` lands in the harness's [api] table first.)
    let host = HostProc::start(
        "max-upload = \"512KiB\"\n[[topics]]\nname = \"clicks\"\npartitions = 2\n",
        |_| {},
    );
    let manifest = manifest_text("counter", None, None, "");
    let wasm = component_bytes("counter");
    // (A small body: the host answers 401 before reading it, and a client
    // still writing a large one would see a broken pipe instead.)
    let body = json!({ "manifest": manifest, "component": "" });

    for token in [None, Some("wrong-token-wrong-token")] {
        let (code, v) = api(&host.addr, "POST", "/v1/modules", Some(&body), token);
        assert_eq!(code, 401, "{v}");
        assert!(v["error"].is_string(), "{v}");
        let (code, _) = api(
            &host.addr,
            "POST",
            "/v1/topics/clicks/events",
            Some(&json!([])),
            token,
        );
        assert_eq!(code, 401);
        let (code, _) = api(&host.addr, "DELETE", "/v1/modules/counter", None, token);
        assert_eq!(code, 401);
        let (code, _) = api(&host.addr, "POST", "/v1/modules/counter/pause", None, token);
        assert_eq!(code, 401);
    }
    let (code, _) = api(&host.addr, "GET", "/v1/modules", None, None);
    assert_eq!(code, 200, "reading needs no token");
    let components = || {
        std::fs::read_dir(host.dir.path().join("data/components"))
            .unwrap()
            .count()
    };

    // Oversized: 413, nothing stored.
    let big = with_custom_section(&wasm, "padding", 600 << 10);
    let (code, v) = post_unread(host.port, "/v1/modules", &deploy_body(&manifest, &big));
    assert_eq!(code, 413, "{v}");
    assert!(v["error"].as_str().unwrap().contains("max-upload"), "{v}");

    // A component importing an interface the host does not grant.
    let http = wat::parse_str(
        r#"(component (import "wasi:http/outgoing-handler@0.2.6" (instance (export "handle" (func)))))"#,
    )
    .unwrap();
    let (code, v) = api(
        &host.addr,
        "POST",
        "/v1/modules",
        Some(&deploy_body(&manifest, &http)),
        Some(TOKEN),
    );
    assert_eq!(code, 422, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("wasi:http/outgoing-handler"),
        "{v}"
    );

    // A manifest with a bad field: named.
    let bad = manifest.replace("version = \"0.1.0\"", "version = \"\"");
    let (code, v) = api(
        &host.addr,
        "POST",
        "/v1/modules",
        Some(&deploy_body(&bad, &wasm)),
        Some(TOKEN),
    );
    assert_eq!(code, 422, "{v}");
    assert!(v["error"].as_str().unwrap().contains("version"), "{v}");
    let feeds_itself = manifest.replace("topic = \"counts\"", "topic = \"clicks\"");
    let (code, v) = api(
        &host.addr,
        "POST",
        "/v1/modules",
        Some(&deploy_body(&feeds_itself, &wasm)),
        Some(TOKEN),
    );
    assert_eq!(code, 422, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("produce[0].topic"),
        "{v}"
    );
    assert_eq!(components(), 0, "nothing stored");
    assert!(host.modules().is_empty());

    // The good one, then the same version with other content: 409.
    deploy(&host, &manifest, &wasm);
    let other = with_custom_section(&wasm, "other", 8);
    let (code, v) = api(
        &host.addr,
        "POST",
        "/v1/modules",
        Some(&deploy_body(&manifest, &other)),
        Some(TOKEN),
    );
    assert_eq!(code, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("new version"), "{v}");
    assert_eq!(components(), 1);
    assert_eq!(host.module("counter").revision, Some(1));
    let (code, v) = api(&host.addr, "GET", "/v1/nothing-here", None, None);
    assert_eq!(code, 404);
    assert!(v["error"].is_string(), "errors are JSON: {v}");
}

/// POST `body` over a raw connection, reading the answer even if the host
/// answers (and closes) before the body is sent: `(status, JSON body)`.
fn post_unread(port: u16, path: &str, body: &Value) -> (u16, Value) {
    use std::io::{Read as _, Write as _};
    let body = serde_json::to_vec(body).unwrap();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&body);
    });
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let _ = writer.join();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let json = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (
        code,
        serde_json::from_str(json).unwrap_or(Value::String(json.into())),
    )
}

#[test]
fn a_non_loopback_listen_without_a_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = std::process::Command::new(sluice_bin())
        .args(["run", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", &format!("0.0.0.0:{port}")])
        .env_remove("SLUICE_API_TOKEN")
        .env_remove("SLUICE_CONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "refusing to listen on 0.0.0.0:{port} without an API token"
        )),
        "{err}"
    );
}

#[test]
fn flags_beat_environment_beat_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let (file_port, env_port, flag_port) = (free_port(), free_port(), free_port());
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "data-dir = \"data\"\n[api]\nlisten = \"127.0.0.1:{file_port}\"\ntoken = \"{TOKEN}\"\n"
        ),
    )
    .unwrap();
    let listening = |env: Option<u16>, flag: Option<u16>| -> u16 {
        let mut cmd = std::process::Command::new(sluice_bin());
        cmd.args(["run", "--config"]).arg(&config);
        cmd.env_remove("SLUICE_LISTEN")
            .stdin(std::process::Stdio::null());
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some(p) = env {
            cmd.env("SLUICE_LISTEN", format!("127.0.0.1:{p}"));
        }
        if let Some(p) = flag {
            cmd.args(["--listen", &format!("127.0.0.1:{p}")]);
        }
        let mut child = ChildGuard(cmd.spawn().unwrap());
        let port = wait_for(Duration::from_secs(60), "the host to listen", || {
            [file_port, env_port, flag_port]
                .into_iter()
                .find(|p| get(&format!("http://127.0.0.1:{p}"), "/healthz").is_ok())
        });
        child.stop();
        port
    };
    assert_eq!(listening(None, None), file_port);
    assert_eq!(listening(Some(env_port), None), env_port);
    assert_eq!(listening(Some(env_port), Some(flag_port)), flag_port);
}

/// A child process killed (by PID) and reaped when dropped.
struct ChildGuard(std::process::Child);

impl ChildGuard {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn sigterm_mid_stream_exits_zero_and_loses_nothing() {
    let mut host = HostProc::start(ORDERS_TOPIC, |m| stage(m, &["aggregator"]));
    let (events, _) = orders(20_000, 40, 41, "term-");
    let stream = Stream::start(&host.addr, events.clone(), 200, Duration::from_millis(5));
    wait_for(
        Duration::from_secs(60),
        "the stream to be under way",
        || (cursor_sum(&host, "aggregator", "orders") > 2000).then_some(()),
    );
    let code = host.terminate();
    let sent = stream.finish();
    assert_eq!(code, Some(0), "log:\n{}", host.log());
    assert!(host.log().contains("shutting down"), "{}", host.log());
    host.restart();
    let status = host.get("/v1/status");
    assert_eq!(status["outbox_at_start"], 0, "{status}");
    host.wait_caught_up("aggregator", Duration::from_secs(120));
    host.assert_aggregator_totals(&totals_of(&events[..sent]));
    let out = host.read_all("totals");
    assert_eq!(out.len(), sent, "one output per accepted input, none twice");
    let m = host.module("aggregator").metrics.unwrap();
    assert_eq!(m.dedup_hits, 0, "a graceful stop leaves nothing to redo");
}

#[test]
fn pause_holds_across_a_restart_and_undeploy_keeps_state_unless_purged() {
    let mut host = HostProc::start("[[topics]]\nname = \"clicks\"\npartitions = 2\n", |_| {});
    produce_clicks(&host, &clicks("old", 100, 5));
    // Deployed after 100 events with --start latest: it counts only what follows.
    let dir = staged_modules().join("counter");
    let r = host.cli(&["deploy", dir.to_str().unwrap(), "--start", "latest"]);
    assert!(r.ok, "{}", r.stderr);
    produce_clicks(&host, &clicks("a", 50, 5));
    host.wait_caught_up("counter", Duration::from_secs(60));
    assert_eq!(counts(&host, "counter"), expected_counts(&[50], 5));

    let r = host.cli(&["pause", "counter"]);
    assert!(r.ok && r.stderr.contains("paused counter"), "{}", r.stderr);
    assert_eq!(host.module("counter").status, "paused");
    produce_clicks(&host, &clicks("b", 50, 5));
    host.restart();
    let m = host.module("counter");
    assert_eq!(m.status, "paused", "kept across a restart");
    assert_eq!(
        m.partitions
            .iter()
            .filter(|p| p.topic == "clicks")
            .map(|p| p.lag)
            .sum::<u64>(),
        50
    );
    assert_eq!(
        counts(&host, "counter"),
        expected_counts(&[50], 5),
        "nothing applied while paused"
    );
    let r = host.cli(&["resume", "counter"]);
    assert!(r.ok && r.stderr.contains("resumed counter"), "{}", r.stderr);
    host.wait_caught_up("counter", Duration::from_secs(60));
    assert_eq!(counts(&host, "counter"), expected_counts(&[50, 50], 5));

    // Undeploy keeps state: deployed again, it continues.
    let r = host.cli(&["undeploy", "counter"]);
    assert!(r.ok, "{}", r.stderr);
    assert!(host.modules().is_empty());
    produce_clicks(&host, &clicks("c", 50, 5));
    let r = host.cli(&["deploy", dir.to_str().unwrap()]);
    assert!(r.ok, "{}", r.stderr);
    host.wait_caught_up("counter", Duration::from_secs(60));
    assert_eq!(counts(&host, "counter"), expected_counts(&[50, 50, 50], 5));

    // --purge: state, idempotency set and cursors go; a new deploy starts
    // over from its manifest's start (earliest): all 250 events.
    let r = host.cli(&["undeploy", "counter", "--purge"]);
    assert!(r.ok, "{}", r.stderr);
    let r = host.cli(&["deploy", dir.to_str().unwrap()]);
    assert!(r.ok, "{}", r.stderr);
    host.wait_caught_up("counter", Duration::from_secs(60));
    assert_eq!(
        counts(&host, "counter"),
        expected_counts(&[100, 50, 50, 50], 5)
    );
    let (code, v) = api(
        &host.addr,
        "POST",
        "/v1/modules/nothing/pause",
        None,
        Some(TOKEN),
    );
    assert_eq!(code, 404, "{v}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("host.log");
    let mut child = ChildGuard(
        std::process::Command::new(sluice_bin())
            .args(["run", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("SLUICE_LOG_FORMAT", "json")
            .env("SLUICE_API_TOKEN", TOKEN)
            .env_remove("SLUICE_CONFIG")
            .stdin(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let addr = format!("http://127.0.0.1:{port}");
    wait_for(Duration::from_secs(60), "the host to be ready", || {
        get(&addr, "/readyz").ok()
    });
    child.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["fields"]["message"] == "ready"),
        "{text}"
    );
}

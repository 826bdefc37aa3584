//! Observability end to end: exact counters on `/metrics` after a known
//! workload (checked by `promtool`), lag status over time, a real Prometheus
//! scraping a host and answering every query of the Grafana dashboard and
//! the alert rules, the dashboard page in headless Chromium, `sluice top`,
//! and traces through two chained modules on the embedded log and on Kafka.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_tests::obs::{ChildGuard, Receiver, attr, hex, metric, repo, scrape, tool};
use sluice_tests::{HostProc, TOKEN, api, component, free_port, manifest_text, stage, wait_for};

fn flaky_event(id: &str, action: &str, key: &str) -> Value {
    json!({"id": id, "source": "/test", "type": "t", "partitionkey": key,
           "data": {"action": action, "key": key}})
}

/// Write module `name` into `modules`: the staged `component` with `manifest`.
fn module(modules: &std::path::Path, name: &str, staged: &str, manifest: &str) {
    let dir = modules.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(component(staged), dir.join(format!("{staged}.wasm"))).unwrap();
    std::fs::write(dir.join("module.toml"), manifest).unwrap();
}

/// A flaky module under another name reading `topic`, with `retry` as its
/// `[retry]` table.
fn flaky_as(name: &str, topic: &str, retry: &str) -> String {
    format!(
        "name = \"{name}\"\nversion = \"0.1.0\"\ncomponent = \"flaky.wasm\"\n\
         [[subscribe]]\ntopic = \"{topic}\"\nstart = \"earliest\"\n\
         [[produce]]\ntopic = \"flaky-out\"\n[retry]\n{retry}\n"
    )
}

fn pause(host: &HostProc, module: &str) {
    let (code, body) = api(
        &host.addr,
        "POST",
        &format!("/v1/modules/{module}/pause"),
        Some(&json!({})),
        Some(TOKEN),
    );
    assert_eq!(code, 200, "{body}");
}

/// Wait until `/metrics` says `value` for the series.
fn wait_metric(host: &HostProc, name: &str, labels: &[(&str, &str)], value: f64) -> String {
    let mut last = None;
    let found = sluice_tests::obs::wait_until(Duration::from_secs(30), || {
        let text = scrape(&host.addr);
        last = metric(&text, name, labels);
        (last == Some(value)).then_some(text)
    });
    found.unwrap_or_else(|| panic!("{name}{labels:?}: wanted {value}, /metrics said {last:?}"))
}

#[test]
fn metrics_count_a_known_workload_exactly() {
    let host = HostProc::start("", |m| stage(m, &["flaky"]));
    let addr = host.addr.clone();
    let m = [("module", "flaky")];
    // 30 applied at once, 4 rejected.
    let mut first: Vec<Value> = (0..30)
        .map(|i| flaky_event(&format!("ok-{i}"), "ok", &format!("k{}", i % 5)))
        .collect();
    first.extend((0..4).map(|i| flaky_event(&format!("no-{i}"), "reject", "k1")));
    host.produce("flaky-in", &Value::Array(first.clone()));
    host.wait_caught_up("flaky", Duration::from_secs(60));
    // 3 that succeed at their second attempt, one at a time.
    for i in 0..3 {
        host.produce(
            "flaky-in",
            &json!([flaky_event(&format!("again-{i}"), "retry-once", "k2")]),
        );
        host.wait_caught_up("flaky", Duration::from_secs(60));
    }
    // 5 duplicates of applied events.
    host.produce("flaky-in", &Value::Array(first[..5].to_vec()));
    host.wait_caught_up("flaky", Duration::from_secs(60));
    // One trap: attempted 3 times (max-attempts), then dead-lettered.
    host.produce("flaky-in", &json!([flaky_event("boom", "panic", "k3")]));
    host.wait_caught_up("flaky", Duration::from_secs(60));
    // Two refused requests: not an event, and no token.
    let (code, _) = sluice_tests::post_raw(
        &addr,
        "/v1/topics/flaky-in/events",
        "application/json",
        b"{not json",
    );
    assert_eq!(code, 400);
    let (code, _) = api(
        &addr,
        "POST",
        "/v1/topics/flaky-in/events",
        Some(&json!([flaky_event("x", "ok", "k0")])),
        None,
    );
    assert_eq!(code, 401);

    let text = wait_metric(&host, "sluice_events_in_total", &m, 38.0);
    let text = {
        // The trap's counters come with the same sample; the depth every fifth.
        let _ = text;
        wait_metric(&host, "sluice_dead_letter_depth", &m, 5.0)
    };
    type Series<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);
    let expected: &[Series] = &[
        ("sluice_events_in_total", &m, 38.0),
        ("sluice_events_applied_total", &m, 33.0),
        ("sluice_events_emitted_total", &m, 33.0),
        ("sluice_events_filtered_total", &m, 0.0),
        ("sluice_dedup_hits_total", &m, 5.0),
        ("sluice_retries_total", &m, 5.0),
        ("sluice_dead_letters_total", &m, 5.0),
        ("sluice_dead_letter_depth", &m, 5.0),
        (
            "sluice_failures_total",
            &[("module", "flaky"), ("class", "reject")],
            4.0,
        ),
        (
            "sluice_failures_total",
            &[("module", "flaky"), ("class", "panic")],
            1.0,
        ),
        (
            "sluice_failures_total",
            &[("module", "flaky"), ("class", "retry")],
            0.0,
        ),
        (
            "sluice_traps_total",
            &[("module", "flaky"), ("kind", "panic")],
            3.0,
        ),
        (
            "sluice_traps_total",
            &[("module", "flaky"), ("kind", "deadline")],
            0.0,
        ),
        ("sluice_ingest_requests_total", &[("code", "200")], 6.0),
        ("sluice_ingest_requests_total", &[("code", "400")], 1.0),
        ("sluice_ingest_requests_total", &[("code", "401")], 1.0),
        ("sluice_ingest_events_total", &[("topic", "flaky-in")], 43.0),
        (
            "sluice_module_status",
            &[("module", "flaky"), ("status", "running")],
            1.0,
        ),
        (
            "sluice_module_status",
            &[("module", "flaky"), ("status", "quarantined")],
            0.0,
        ),
        (
            "sluice_module_lag_status",
            &[("module", "flaky"), ("status", "OK")],
            1.0,
        ),
        (
            "sluice_module_info",
            &[("module", "flaky"), ("version", "0.1.0")],
            1.0,
        ),
        ("sluice_ready", &[], 1.0),
        ("sluice_outbox_pending", &[], 0.0),
    ];
    for (name, labels, want) in expected {
        assert_eq!(
            metric(&text, name, labels),
            Some(*want),
            "{name}{labels:?} in\n{text}"
        );
    }
    // Lag 0 on every partition once drained, and its age 0.
    let lags: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("sluice_lag_events{module=\"flaky\""))
        .collect();
    assert!(!lags.is_empty(), "{text}");
    assert!(lags.iter().all(|l| l.ends_with(" 0")), "{lags:?}");
    assert!(
        text.lines()
            .filter(|l| l.starts_with("sluice_lag_seconds{module=\"flaky\""))
            .all(|l| l.ends_with(" 0"))
    );
    // Every event went through the module at least once; batches committed.
    let wasm = metric(&text, "sluice_event_wasm_seconds_count", &m).unwrap();
    assert!(wasm >= 38.0, "{wasm}");
    assert!(metric(&text, "sluice_batch_commit_seconds_count", &m).unwrap() >= 1.0);
    assert!(
        text.contains("# TYPE sluice_batch_seconds histogram"),
        "{text}"
    );
    // The JSON API says the same.
    let info = host.module("flaky");
    let c = info.metrics.clone().unwrap();
    assert_eq!(
        (c.events_in, c.applied, c.retries, c.dead_letters),
        (38, 33, 5, 5)
    );
    assert_eq!(c.failures["reject"], 4);
    assert_eq!(c.recent_failures[0].id, "boom");
    assert_eq!(c.recent_failures[0].class, "panic");
    assert_eq!(info.dead_letter_depth, Some(5));

    // promtool accepts the exposition as it is.
    let promtool = tool(
        "promtool",
        "scripts/check-observability.sh installs Debian's prometheus",
    );
    let mut check = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_off_serve_no_metrics_and_the_api_still_counts() {
    let host = HostProc::start("[telemetry]\nmetrics = false\n", |m| stage(m, &["flaky"]));
    host.produce("flaky-in", &json!([flaky_event("a", "ok", "k0")]));
    host.wait_caught_up("flaky", Duration::from_secs(60));
    let (code, body) = api(&host.addr, "GET", "/metrics", None, None);
    assert_eq!(code, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("[telemetry] metrics")
    );
    assert_eq!(host.module("flaky").metrics.unwrap().applied, 1);
}

/// The lag status of each module, as the API says.
fn lag_statuses(host: &HostProc) -> BTreeMap<String, String> {
    host.modules()
        .into_iter()
        .map(|m| {
            let s = m.lag_status.map(|s| s.as_str().to_string());
            (m.name, s.unwrap_or_default())
        })
        .collect()
}

#[test]
fn lag_status_tells_a_stalled_module_from_a_healthy_and_a_paused_one() {
    let host = HostProc::start("[telemetry]\nlag-window = \"3s\"\n", |m| {
        stage(m, &["aggregator", "filter"]);
        let retry = "max-attempts = 1000000\nbackoff = { initial = \"20ms\", max = \"50ms\" }\nquarantine-after = 0";
        module(m, "stuck", "flaky", &flaky_as("stuck", "stuck-in", retry));
    });
    // Every module starts OK (the window fills with lag 0).
    wait_for(Duration::from_secs(30), "every module OK", || {
        let s = lag_statuses(&host);
        (s.len() == 3 && s.values().all(|v| v == "OK")).then_some(())
    });
    pause(&host, "filter");
    // The sampler judges once a second.
    wait_for(Duration::from_secs(30), "the paused filter STOP", || {
        (lag_statuses(&host)["filter"] == "STOP").then_some(())
    });
    let mut events = vec![flaky_event("never", "retry-always", "k0")];
    events.extend((0..5).map(|i| flaky_event(&format!("behind-{i}"), "ok", "k0")));
    host.produce("stuck-in", &Value::Array(events));
    let orders: Vec<Value> = (0..200)
        .map(|i| {
            json!({"id": format!("o-{i}"), "source": "/test", "type": "order.created",
                   "partitionkey": format!("c{}", i % 10),
                   "data": {"order_id": format!("o-{i}"), "customer": format!("c{}", i % 10), "amount": 20000}})
        })
        .collect();
    host.produce("orders", &Value::Array(orders));

    // Over the next seconds: the stuck module goes from OK to STALL and
    // stays there; the aggregator is OK throughout; the paused filter STOP.
    let started = Instant::now();
    let mut stuck_seen = Vec::new();
    let mut stalled_since: Option<Instant> = None;
    while stalled_since.is_none_or(|t| t.elapsed() < Duration::from_secs(3)) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the stuck module never stayed STALL: {stuck_seen:?}"
        );
        let s = lag_statuses(&host);
        assert_eq!(s["aggregator"], "OK", "{s:?}");
        assert_eq!(s["filter"], "STOP", "{s:?}");
        if stuck_seen.last() != Some(&s["stuck"]) {
            stuck_seen.push(s["stuck"].clone());
        }
        match (s["stuck"].as_str(), stalled_since) {
            ("STALL", None) => stalled_since = Some(Instant::now()),
            ("STALL", Some(_)) => {}
            (other, Some(_)) => panic!("STALL turned {other}: {stuck_seen:?}"),
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(stuck_seen, ["OK", "STALL"]);
    let stuck = host.module("stuck");
    let p = stuck.partitions.iter().find(|p| p.lag > 0).unwrap();
    assert_eq!(p.lag, 6);
    assert!(p.lag_seconds.unwrap() > 0.0, "{p:?}");

    let text = scrape(&host.addr);
    for (module, status) in [("stuck", "STALL"), ("filter", "STOP"), ("aggregator", "OK")] {
        assert_eq!(
            metric(
                &text,
                "sluice_module_lag_status",
                &[("module", module), ("status", status)]
            ),
            Some(1.0),
            "{module} {status}\n{text}"
        );
    }
    let part = p.partition.to_string();
    let labels = [
        ("module", "stuck"),
        ("topic", "stuck-in"),
        ("partition", part.as_str()),
    ];
    assert_eq!(metric(&text, "sluice_lag_events", &labels), Some(6.0));
    let with_status = [labels.as_slice(), &[("status", "STALL")]].concat();
    assert_eq!(metric(&text, "sluice_lag_status", &with_status), Some(1.0));

    // The CLI's table and `sluice top` say the same.
    let table = host.cli(&["modules"]);
    assert!(table.ok, "{}", table.stderr);
    let row = table
        .stdout
        .lines()
        .find(|l| l.starts_with("stuck "))
        .unwrap()
        .to_string();
    assert!(row.contains("STALL"), "{}", table.stdout);
    let top = host.cli(&["top", "--once", "--interval", "0.5"]);
    assert!(top.ok, "{}", top.stderr);
    let line = |name: &str| {
        top.stdout
            .lines()
            .find(|l| l.contains(&format!("│{name} ")) || l.contains(&format!(" {name} ")))
            .unwrap_or_else(|| panic!("{name} not in\n{}", top.stdout))
            .to_string()
    };
    assert!(line("stuck").contains("STALL"), "{}", top.stdout);
    assert!(
        line("filter").contains("paused") && line("filter").contains("STOP"),
        "{}",
        top.stdout
    );
    assert!(line("aggregator").contains("OK"), "{}", top.stdout);

    // Resumed, the filter catches up and is OK again.
    let (code, _) = api(
        &host.addr,
        "POST",
        "/v1/modules/filter/resume",
        Some(&json!({})),
        Some(TOKEN),
    );
    assert_eq!(code, 200);
    host.wait_caught_up("filter", Duration::from_secs(60));
    wait_for(Duration::from_secs(30), "filter OK", || {
        (lag_statuses(&host)["filter"] == "OK").then_some(())
    });
}

/// A host that has something of everything: a healthy aggregator, a router
/// that dead-letters, a quarantined module, a paused one with lag and one
/// that failed to load. Returns once the workload is processed.
fn eventful_host(extra: &str) -> HostProc {
    let host = HostProc::start(extra, |m| {
        stage(m, &["aggregator", "router"]);
        module(
            m,
            "quar",
            "flaky",
            &flaky_as("quar", "quar-in", "max-attempts = 1\nquarantine-after = 2"),
        );
        module(
            m,
            "idle",
            "filter",
            &manifest_text("filter", Some("idle"), None, ""),
        );
        let broken = m.join("broken");
        std::fs::create_dir_all(&broken).unwrap();
        std::fs::write(broken.join("broken.wasm"), b"\0asm not really").unwrap();
        std::fs::write(
            broken.join("module.toml"),
            "name = \"broken\"\nversion = \"0.1.0\"\ncomponent = \"broken.wasm\"\n[[subscribe]]\ntopic = \"orders\"\n",
        )
        .unwrap();
    });
    pause(&host, "idle");
    let (mut orders, _) = sluice_tests::orders(300, 10, 11, "o-");
    orders.extend((0..4).map(|i| {
        json!({"id": format!("signup-{i}"), "source": "/test", "type": "user.signup",
               "partitionkey": "u", "data": {}})
    }));
    host.produce("orders", &Value::Array(orders));
    host.produce(
        "quar-in",
        &json!([
            flaky_event("q1", "reject", "k0"),
            flaky_event("q2", "reject", "k0"),
            flaky_event("q3", "ok", "k0")
        ]),
    );
    host.wait_caught_up("aggregator", Duration::from_secs(60));
    host.wait_caught_up("router", Duration::from_secs(60));
    wait_for(Duration::from_secs(30), "quar quarantined", || {
        (host.module("quar").status.name() == "quarantined").then_some(())
    });
    host
}

/// What `/metrics` and the page must agree on, per module.
fn counters_of(text: &str, module: &str) -> Value {
    let m = [("module", module)];
    let c = |name: &str| metric(text, name, &m).map(|v| v as u64);
    let lag: f64 = text
        .lines()
        .filter(|l| l.starts_with(&format!("sluice_lag_events{{module=\"{module}\",")))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum();
    json!({
        "events_in": c("sluice_events_in_total"),
        "applied": c("sluice_events_applied_total"),
        "emitted": c("sluice_events_emitted_total"),
        "dead_letters": c("sluice_dead_letters_total"),
        "retries": c("sluice_retries_total"),
        "dead_letter_depth": c("sluice_dead_letter_depth"),
        "lag": lag as u64,
    })
}

#[test]
fn the_dashboard_in_a_real_browser_shows_what_metrics_say() {
    let host = eventful_host("");
    // Let the sampler catch up with the API (dead-letter depth every 5 s).
    let text = wait_for(Duration::from_secs(30), "metrics equal to the API", || {
        let text = scrape(&host.addr);
        let same = host
            .modules()
            .iter()
            .filter(|m| m.metrics.is_some())
            .all(|m| {
                let c = m.metrics.as_ref().unwrap();
                let got = counters_of(&text, &m.name);
                got["applied"] == json!(c.applied)
                    && got["dead_letters"] == json!(c.dead_letters)
                    && m.dead_letter_depth.is_some()
                    && got["dead_letter_depth"] == json!(m.dead_letter_depth)
            });
        same.then_some(text)
    });
    let tools = sluice_tests::obs::tools_dir("browser-tools.sh");
    let shot = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let page = sluice_tests::obs::json_line(
        Command::new("node")
            .arg(repo().join("tests/browser/dashboard.mjs"))
            .arg(format!("{}/", host.addr))
            .arg(&shot)
            .env("SLUICE_BROWSER_TOOLS", &tools)
            .stdin(Stdio::null()),
    );
    assert_eq!(page["console_errors"], json!([]), "{page}");
    let shown: BTreeMap<String, Value> = page["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap().to_string(), m.clone()))
        .collect();
    let names: Vec<&str> = shown.keys().map(String::as_str).collect();
    assert_eq!(names, ["aggregator", "broken", "idle", "quar", "router"]);
    for (name, row) in &shown {
        if name == "broken" {
            continue;
        }
        let want = counters_of(&text, name);
        for (field, value) in want.as_object().unwrap() {
            assert_eq!(
                &row[field], value,
                "{name} {field}: page {row}, /metrics {want}"
            );
        }
    }
    assert_eq!(shown["quar"]["status"], "quarantined");
    assert_eq!(shown["idle"]["status"], "paused");
    assert_eq!(shown["idle"]["lag_status"], "STOP");
    assert_eq!(shown["broken"]["status"], "failed");
    assert_eq!(shown["aggregator"]["lag_status"], "OK");
    assert!(shown["idle"]["lag"].as_u64().unwrap() > 0);
    assert!(shown["router"]["dead_letter_depth"].as_u64().unwrap() == 4);
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot {} is {size} bytes",
        shot.display()
    );
}

/// Every PromQL expression of the Grafana dashboard and the alert rules.
fn expressions() -> Vec<(String, String)> {
    let out = Command::new("python3")
        .arg(repo().join("scripts/promql-exprs.py"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["source"].as_str().unwrap().into(),
                v["expr"].as_str().unwrap().into(),
            )
        })
        .collect()
}

fn query(prom: &str, expr: &str) -> Value {
    let url = format!("{prom}/api/v1/query");
    let v: Value = ureq::get(&url)
        .query("query", expr)
        .call()
        .unwrap_or_else(|e| panic!("{expr}: {e}"))
        .into_json()
        .unwrap();
    assert_eq!(v["status"], "success", "{expr}: {v}");
    v["data"]["result"].clone()
}

#[test]
fn prometheus_scrapes_a_host_and_every_dashboard_and_alert_query_answers() {
    let prometheus = tool(
        "prometheus",
        "scripts/check-observability.sh installs Debian's prometheus",
    );
    let host = eventful_host("");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            repo().join("examples/observability/alerts.yml").display(),
            host.port
        ),
    )
    .unwrap();
    let _prom = ChildGuard(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let prom = format!("http://127.0.0.1:{port}");
    wait_for(
        Duration::from_secs(60),
        "Prometheus to scrape the host",
        || {
            let r = ureq::get(&format!("{prom}/api/v1/query"))
                .query("query", "count_over_time(up{job=\"sluice\"}[1m])")
                .call()
                .ok()?
                .into_json::<Value>()
                .ok()?;
            let n: f64 = r["data"]["result"][0]["value"][1].as_str()?.parse().ok()?;
            (n >= 3.0).then_some(())
        },
    );
    // More dead letters after the first scrapes: the depth grows in range.
    host.produce(
        "orders",
        &json!([{"id": "signup-late", "source": "/test", "type": "user.signup", "partitionkey": "u", "data": {}}]),
    );
    let exprs = expressions();
    assert!(exprs.len() >= 20, "{exprs:?}");
    // Alerts this host must raise; the others must stay quiet.
    let raised = [
        "alert:SluiceModuleLagging",
        "alert:SluiceDeadLettersGrowing",
        "alert:SluiceModuleQuarantined",
        "alert:SluiceModuleFailed",
    ];
    for (source, expr) in &exprs {
        if expr.contains("sluice_kafka_up") && !source.starts_with("alert:") {
            continue; // the one panel of hosts on Kafka
        }
        let quiet = source.starts_with("alert:") && !raised.contains(&source.as_str());
        let result = if quiet {
            query(&prom, expr)
        } else {
            let mut last = Value::Null;
            let found = sluice_tests::obs::wait_until(Duration::from_secs(60), || {
                last = query(&prom, expr);
                (!last.as_array().unwrap().is_empty()).then(|| last.clone())
            });
            found.unwrap_or_else(|| panic!("{source}: `{expr}` returned no data: {last}"))
        };
        if quiet {
            assert_eq!(
                result,
                json!([]),
                "{source} raised on a host without its cause: {expr}"
            );
        }
    }
    // The lag alert is on its way for the paused module.
    let alerts: Value = ureq::get(&format!("{prom}/api/v1/alerts"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let lagging: Vec<&Value> = alerts["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["labels"]["alertname"] == "SluiceModuleLagging")
        .collect();
    assert!(
        lagging.iter().any(|a| a["labels"]["module"] == "idle"
            && matches!(a["state"].as_str(), Some("pending" | "firing"))),
        "{alerts}"
    );
}

/// `(trace id, span id, parent span id, name)` of each span of `trace`.
fn links(
    spans: &[opentelemetry_proto::tonic::trace::v1::Span],
    trace: &str,
) -> Vec<(String, String, String)> {
    spans
        .iter()
        .filter(|s| hex(&s.trace_id) == trace)
        .map(|s| (hex(&s.span_id), hex(&s.parent_span_id), s.name.clone()))
        .collect()
}

/// An event with a `traceparent` through `filter` and a module reading its
/// output: one trace, producer -> filter -> downstream, with the messaging
/// conventions' attributes.
fn trace_through_two_modules(kafka: Option<&sluice_tests::kafka::Broker>) {
    let receiver = Receiver::start();
    let extra = format!(
        "{}[telemetry]\notlp-endpoint = \"http://{}\"\nsampling = 0.0\n",
        kafka.map(|b| b.host_config()).unwrap_or_default(),
        receiver.addr
    );
    let host = HostProc::start(&extra, |m| {
        stage(m, &["filter"]);
        let text = manifest_text("aggregator", Some("downstream"), None, "")
            .replace("topic = \"orders\"", "topic = \"large-orders\"")
            .replace("order.created", "order.large")
            .replace("topic = \"totals\"", "topic = \"downstream-totals\"");
        module(m, "downstream", "aggregator", &text);
    });
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let traced = json!({"specversion": "1.0", "id": "big-1", "source": "/shop", "type": "order.created",
        "partitionkey": "c1", "traceparent": format!("00-{trace}-{parent}-01"),
        "data": {"order_id": "big-1", "customer": "c1", "amount": 50000}});
    // Sampling 0: an input without a sampled parent makes no exported span.
    let untraced = json!({"specversion": "1.0", "id": "big-2", "source": "/shop", "type": "order.created",
        "partitionkey": "c2", "data": {"order_id": "big-2", "customer": "c2", "amount": 60000}});
    host.produce("orders", &json!([traced, untraced]));
    host.wait_caught_up("downstream", Duration::from_secs(60));
    let spans = receiver.wait(
        Duration::from_secs(60),
        "three spans of the trace",
        |spans| {
            let l = links(spans, trace);
            (l.len() >= 3).then_some(spans.to_vec())
        },
    );
    let l = links(&spans, trace);
    assert_eq!(l.len(), 3, "{l:?}");
    let by_name = |name: &str| {
        let i = l
            .iter()
            .position(|(_, _, n)| n == name)
            .unwrap_or_else(|| panic!("no span {name}: {l:?}"));
        (
            l[i].clone(),
            spans
                .iter()
                .find(|s| hex(&s.span_id) == l[i].0)
                .unwrap()
                .clone(),
        )
    };
    let ((send_id, send_parent, _), send) = by_name("send orders");
    let ((filter_id, filter_parent, _), filter) = by_name("process orders");
    let ((_, down_parent, _), down) = by_name("process large-orders");
    assert_eq!(
        send_parent, parent,
        "the producer span continues the input's trace"
    );
    assert_eq!(filter_parent, send_id);
    assert_eq!(down_parent, filter_id);
    let system = if kafka.is_some() { "kafka" } else { "sluice" };
    for s in [&send, &filter, &down] {
        assert_eq!(
            attr(s, "messaging.system").as_deref(),
            Some(system),
            "{s:?}"
        );
    }
    assert_eq!(send.kind, 4, "producer"); // SPAN_KIND_PRODUCER
    assert_eq!(filter.kind, 5, "consumer"); // SPAN_KIND_CONSUMER
    assert_eq!(
        attr(&filter, "messaging.operation.type").as_deref(),
        Some("process")
    );
    assert_eq!(
        attr(&filter, "messaging.destination.name").as_deref(),
        Some("orders")
    );
    assert_eq!(
        attr(&filter, "cloudevents.event_id").as_deref(),
        Some("big-1")
    );
    assert_eq!(
        attr(&filter, "messaging.message.id").as_deref(),
        Some("big-1")
    );
    assert!(attr(&filter, "messaging.destination.partition.id").is_some());
    assert_eq!(
        attr(&down, "messaging.destination.name").as_deref(),
        Some("large-orders")
    );
    assert_eq!(attr(&down, "sluice.module").as_deref(), Some("downstream"));
    if kafka.is_some() {
        assert_eq!(
            attr(&filter, "messaging.consumer.group.name").as_deref(),
            Some("sluice.filter")
        );
        assert!(attr(&down, "messaging.kafka.offset").is_some(), "{down:?}");
    }
    // The output the downstream module read carries the filter's span.
    let out = host
        .read_all("large-orders")
        .into_iter()
        .find(|e| e["data"]["customer"] == "c1")
        .unwrap();
    let carried = out["headers"]["traceparent"]
        .as_str()
        .or(out["traceparent"].as_str())
        .unwrap_or_default()
        .to_string();
    assert_eq!(carried, format!("00-{trace}-{filter_id}-01"), "{out}");
    // Nothing of the unsampled event was exported.
    assert!(
        spans
            .iter()
            .all(|s| attr(s, "cloudevents.event_id").as_deref() != Some("big-2")),
        "an unsampled event's span was exported"
    );
}

#[test]
fn a_trace_joins_ingest_and_two_chained_modules() {
    trace_through_two_modules(None);
}

#[test]
fn kafka_a_trace_joins_producer_broker_and_two_chained_modules() {
    let broker = sluice_tests::kafka::Broker::start(sluice_tests::kafka::Storage::Memory);
    trace_through_two_modules(Some(&broker));
}

//! Bad input is refused with a reason and takes nothing down.

use std::time::Duration;

use serde_json::json;
use sluice_tests::*;

#[test]
fn malformed_events_get_a_4xx_with_the_reason() {
    let host = HostProc::start("[[topics]]\nname = \"in\"\n", |_| {});
    let (code, body) = post_raw(
        &host.addr,
        "/v1/topics/in/events",
        "application/json",
        b"{\"type\": ",
    );
    assert_eq!(code, 400);
    assert!(
        body["error"].as_str().unwrap().contains("not valid JSON"),
        "{body}"
    );

    let (code, body) = post_raw(
        &host.addr,
        "/v1/topics/in/events",
        "application/json",
        br#"[{"type":"t"},{"id":"x","data":1}]"#,
    );
    assert_eq!(code, 400);
    assert_eq!(body["field"], "type");
    assert_eq!(body["index"], 1);
    assert_eq!(
        host.read_all("in").len(),
        0,
        "a refused batch appends nothing"
    );

    let (code, body) = post_raw(
        &host.addr,
        "/v1/topics/nowhere/events",
        "application/json",
        br#"{"type":"t"}"#,
    );
    assert_eq!(code, 404);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("unknown topic `nowhere`"),
        "{body}"
    );

    let ok = host.produce("in", &json!({"type": "t", "data": {"a": 1}}));
    assert_eq!(ok["accepted"], 1);
    assert_eq!(
        ok["events"][0]["id"],
        format!("in/{}/0", ok["events"][0]["partition"])
    );

    // CloudEvents HTTP binary mode: attributes in ce-* headers, body = data.
    let r = sluice_tests::authed(ureq::post(&format!("{}/v1/topics/in/events", host.addr)))
        .set("ce-specversion", "1.0")
        .set("ce-type", "raw.bytes")
        .set("ce-id", "b-1")
        .set("ce-source", "/bin")
        .set("ce-partitionkey", "k1")
        .set("content-type", "application/octet-stream")
        .send_bytes(&[0, 159, 146, 150])
        .unwrap();
    assert_eq!(r.status(), 200);
    let stored: Vec<_> = host
        .read_all("in")
        .into_iter()
        .filter(|e| e["id"] == "b-1")
        .collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0]["data_base64"], "AJ+Slg==",
        "raw bytes kept: {}",
        stored[0]
    );
    assert_eq!(stored[0]["partitionkey"], "k1");
    let (code, body) = post_raw(&host.addr, "/v1/topics/in/events", "text/plain", b"x");
    assert_eq!(code, 400, "no ce-type and not JSON: {body}");

    // `sluice produce` names the file and line of a bad event, and stops there.
    let file = host.dir.path().join("events.jsonl");
    std::fs::write(
        &file,
        "{\"type\":\"t\",\"id\":\"p-1\"}\n{\"id\":\"p-2\"}\n{\"type\":\"t\"}\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let run = host.cli(&["produce", "in", "--batch", "1", "--file", file]);
    assert!(!run.ok);
    let err = run.stderr;
    assert!(
        err.contains("events.jsonl:2") && err.contains("`type`"),
        "{err}"
    );
    let ids: Vec<_> = host
        .read_all("in")
        .into_iter()
        .map(|e| e["id"].clone())
        .collect();
    assert!(ids.contains(&json!("p-1")) && !ids.contains(&json!("p-2")));
}

/// A module directory `name` holding `component` and a manifest (plus `extra`
/// top-level manifest lines) that subscribes to `orders`.
fn write_module(modules: &std::path::Path, name: &str, component: &[u8], extra: &str) {
    let dir = modules.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("c.wasm"), component).unwrap();
    let manifest = format!(
        "name = \"{name}\"\nversion = \"1\"\ncomponent = \"c.wasm\"\n{extra}[[subscribe]]\ntopic = \"orders\"\n"
    );
    std::fs::write(dir.join("module.toml"), manifest).unwrap();
}

#[test]
fn a_component_without_handle_is_refused_and_named_while_others_run() {
    let mut host = HostProc::start("", |m| {
        stage(m, &["filter"]);
        let http = r#"(component (import "wasi:http/outgoing-handler@0.2.6" (instance (export "handle" (func)))))"#;
        write_module(m, "broken", &wat::parse_str("(component)").unwrap(), "");
        write_module(m, "wants-http", &wat::parse_str(http).unwrap(), "");
        write_module(m, "garbage", b"not wasm at all", "");
        write_module(m, "badmanifest", b"", "colour = \"red\"\n");
    });
    let mods = host.modules();
    let status = |n: &str| {
        mods.iter()
            .find(|m| m.name == n)
            .map(|m| m.status.to_string())
            .unwrap_or_default()
    };
    assert!(
        status("broken").contains("missing export `handle`"),
        "{}",
        status("broken")
    );
    assert!(
        status("garbage").contains("not a valid WebAssembly component"),
        "{}",
        status("garbage")
    );
    assert!(
        status("badmanifest").contains("colour"),
        "{}",
        status("badmanifest")
    );
    let http = status("wants-http");
    assert!(
        http.contains("imports something the host does not provide")
            && http.contains("wasi:http/outgoing-handler"),
        "{http}"
    );
    assert_eq!(status("filter"), "running");

    host.produce(
        "orders",
        &json!({"type": "order.created", "data": {"order_id": "o1", "amount": 20000}}),
    );
    host.wait_caught_up("filter", Duration::from_secs(30));
    wait_for(Duration::from_secs(30), "filter output", || {
        (host.read_all("large-orders").len() == 1).then_some(())
    });
    assert!(host.alive());
}

#[test]
fn missing_config_and_port_in_use_are_clear_errors() {
    let run = sluice(&["run", "--config", "/nonexistent/sluice.toml"], None);
    assert!(!run.ok);
    let err = run.stderr;
    assert!(
        err.contains("/nonexistent/sluice.toml") && err.contains("does not exist"),
        "{err}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(
        &cfg,
        format!("data-dir = \"data\"\n[api]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let run = sluice(
        &["run".as_ref(), "--config".as_ref(), cfg.as_os_str()],
        None,
    );
    assert!(!run.ok);
    let err = run.stderr;
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );

    std::fs::write(&cfg, "data-dir = \"data\"\n[log]\npartitons = 3\n").unwrap();
    let run = sluice(
        &["run".as_ref(), "--config".as_ref(), cfg.as_os_str()],
        None,
    );
    assert!(!run.ok);
    let err = run.stderr;
    assert!(err.contains("partitons"), "{err}");
}

#[test]
fn sigterm_stops_cleanly_and_keeps_what_was_committed() {
    let mut host = HostProc::start("", |m| stage(m, &["aggregator"]));
    let (events, expected) = orders(2_000, 10, 3, "t-");
    host.produce("orders", &serde_json::Value::Array(events));
    host.wait_caught_up("aggregator", Duration::from_secs(60));
    assert_eq!(
        host.terminate(),
        Some(0),
        "exit code after SIGTERM; log:\n{}",
        host.log()
    );
    host.restart();
    let state = host.state("aggregator");
    assert_eq!(state.len(), expected.len());
    assert_eq!(host.read_all("totals").len(), 2_000);
}

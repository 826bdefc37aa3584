//! Event governance end to end: events validated against their type's
//! schema at HTTP ingest, when modules read them and when modules emit
//! them (on the embedded log and on Kafka); modules whose contracts no
//! schema satisfies refused at deploy; a schema change that would break a
//! deployed module's contract refused; `sluice schema check` on a breaking
//! change and on the examples; the confluent-kafka client against the
//! host's registry API; the event catalog as AsyncAPI (checked by
//! `@asyncapi/parser`) and as a page in headless Chromium.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::obs::{metric, repo, scrape};
use sluice_tests::{
    HostProc, TOKEN, api, component_bytes, deploy_body, manifest_text, stage, wait_for,
};

/// A copy of the quickstart's schemas in `dir`, where order.large admits
/// amounts up to 100000 only (so the filter can emit an invalid output).
fn schemas_in(dir: &Path) -> PathBuf {
    let to = dir.join("schemas");
    copy_dir(&repo().join("examples/quickstart/schemas"), &to);
    let large = to.join("order.large/1.json");
    let mut s: Value = serde_json::from_slice(&std::fs::read(&large).unwrap()).unwrap();
    s["properties"]["amount"]["maximum"] = json!(100000);
    std::fs::write(&large, s.to_string()).unwrap();
    to
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn order(id: &str, customer: &str, amount: Value) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "/shop", "type": "order.created",
           "partitionkey": customer, "data": {"order_id": id, "customer": customer, "amount": amount}})
}

/// A host with the quickstart's schemas (as [`schemas_in`] changes them)
/// in `<host dir>/schemas`, `orders` with policy `dead-letter`, `strict`
/// with the default (`reject`), and the filter and the aggregator.
fn governed_host(kafka: &str) -> HostProc {
    let extra = format!(
        "{kafka}[schemas]\ndir = \"schemas\"\n\
         [[topics]]\nname = \"orders\"\npartitions = 2\nschema-policy = \"dead-letter\"\n\
         [[topics]]\nname = \"strict\"\npartitions = 1\n"
    );
    HostProc::start(&extra, |m| {
        schemas_in(m.parent().unwrap());
        stage(m, &["filter", "aggregator"]);
    })
}

/// Dead letters of `module` (from its dead-letter topic).
fn dead_letters(host: &HostProc, module: &str) -> Vec<Value> {
    host.get(&format!("/v1/modules/{module}/dlq/events?limit=100"))["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn validation_scenario(kafka: &str) {
    let host = governed_host(kafka);
    // A topic whose policy is `reject` (the default): 400, naming the
    // event, the version and the pointer; nothing is appended.
    let (code, body) = api(
        &host.addr,
        "POST",
        "/v1/topics/strict/events",
        Some(&json!([
            order("s-1", "c1", json!(5)),
            order("s-2", "c1", json!("many"))
        ])),
        Some(TOKEN),
    );
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["index"], 1, "{body}");
    assert_eq!(body["violations"][0]["pointer"], "/amount", "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("order.created") && msg.contains("version 1"),
        "{msg}"
    );
    assert!(host.read_all("strict").is_empty());

    // On `orders` (policy dead-letter) an invalid event is accepted and
    // every module reading it dead-letters it, class `schema`, with the
    // pointer; an order whose output is invalid fails at the filter only;
    // everything else is applied.
    let events = json!([
        order("o-1", "c1", json!(20000)),
        order("o-2", "c2", json!(-3)),
        order("o-3", "c1", json!(500000)),
        order("o-4", "c2", json!(30000)),
    ]);
    host.produce("orders", &events);
    host.wait_caught_up("filter", Duration::from_secs(60));
    host.wait_caught_up("aggregator", Duration::from_secs(60));
    let filter = host.module("filter");
    let aggregator = host.module("aggregator");
    assert_eq!(filter.status.name(), "running");
    assert_eq!(aggregator.status.name(), "running");
    let fm = filter.metrics.unwrap();
    let am = aggregator.metrics.unwrap();
    assert_eq!((fm.applied, fm.dead_letters), (2, 2), "{fm:?}");
    assert_eq!((am.applied, am.dead_letters), (3, 1), "{am:?}");
    assert_eq!(fm.failures["schema"], 2);
    assert_eq!(am.failures["schema"], 1);

    let fd = wait_for(
        Duration::from_secs(30),
        "the filter's 2 dead letters",
        || {
            let d = dead_letters(&host, "filter");
            (d.len() == 2).then_some(d)
        },
    );
    let by_id = |d: &[Value], id: &str| {
        d.iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("no dead letter {id} in {d:?}"))
            .clone()
    };
    let bad_input = by_id(&fd, "o-2");
    assert_eq!(bad_input["headers"]["sluice.dlq.class"], "schema");
    let why: Value =
        serde_json::from_str(bad_input["headers"]["sluice.dlq.message"].as_str().unwrap()).unwrap();
    assert_eq!(why["type"], "order.created");
    assert_eq!(why["version"], 1);
    assert_eq!(why["violations"][0]["pointer"], "/amount", "{why}");
    let bad_output = by_id(&fd, "o-3");
    assert_eq!(bad_output["headers"]["sluice.dlq.class"], "schema");
    let why = bad_output["headers"]["sluice.dlq.message"]
        .as_str()
        .unwrap();
    assert!(
        why.contains("order.large") && why.contains("/amount"),
        "{why}"
    );
    let ad = wait_for(
        Duration::from_secs(30),
        "the aggregator's dead letter",
        || {
            let d = dead_letters(&host, "aggregator");
            (d.len() == 1).then_some(d)
        },
    );
    assert_eq!(ad[0]["id"], "o-2");
    // Outputs: only the valid ones.
    let large: Vec<String> = host
        .read_all("large-orders")
        .iter()
        .map(|e| e["data"]["order_id"].as_str().unwrap().to_string())
        .collect();
    let mut large = large;
    large.sort();
    assert_eq!(large, ["o-1", "o-4"]);
    // Counted per type, version and stage.
    let text = wait_for(
        Duration::from_secs(30),
        "schema failures on /metrics",
        || {
            let t = scrape(&host.addr);
            let input = [
                ("type", "order.created"),
                ("version", "1"),
                ("stage", "input"),
            ];
            (metric(&t, "sluice_schema_failures_total", &input) == Some(2.0)).then_some(t)
        },
    );
    let ingest = [
        ("type", "order.created"),
        ("version", "1"),
        ("stage", "ingest"),
    ];
    assert_eq!(
        metric(&text, "sluice_schema_failures_total", &ingest),
        Some(1.0)
    );
    let output = [
        ("type", "order.large"),
        ("version", "1"),
        ("stage", "output"),
    ];
    assert!(metric(&text, "sluice_schema_failures_total", &output).unwrap() >= 1.0);
}

#[test]
fn events_are_validated_at_ingest_on_input_and_on_output() {
    validation_scenario("");
}

#[test]
fn kafka_events_are_validated_at_ingest_on_input_and_on_output() {
    let broker = sluice_tests::kafka::Broker::start(sluice_tests::kafka::Storage::Memory);
    validation_scenario(&broker.host_config());
}

/// Deploy the aggregator's component with `manifest`; the refusal's message.
fn refused_deploy(host: &HostProc, manifest: &str) -> String {
    let (code, body) = api(
        &host.addr,
        "POST",
        "/v1/modules",
        Some(&deploy_body(manifest, &component_bytes("aggregator"))),
        Some(TOKEN),
    );
    assert_eq!(code, 422, "{body}");
    body["error"].as_str().unwrap().to_string()
}

#[test]
fn deploys_and_schema_changes_that_break_a_contract_are_refused() {
    let host = governed_host("");
    // A consumer no registered version satisfies.
    let e = refused_deploy(
        &host,
        &manifest_text(
            "aggregator",
            Some("wants-v7"),
            None,
            "[[consumes]]\ntype = \"order.created\"\nversions = [7]\n",
        ),
    );
    assert!(
        e.contains("`wants-v7`") && e.contains("order.created") && e.contains("versions 7"),
        "{e}"
    );
    // A contract a registered version can violate: `amount` as a string.
    let e = refused_deploy(
        &host,
        &manifest_text("aggregator", Some("wants-text"), None, "").replace(
            "[consumes.contract.properties.amount]\ntype = \"integer\"",
            "[consumes.contract.properties.amount]\ntype = \"string\"",
        ),
    );
    assert!(
        e.contains("`wants-text`")
            && e.contains("version 1 of `order.created`")
            && e.contains("/properties/amount"),
        "{e}"
    );
    assert!(!host.modules().iter().any(|m| m.name.starts_with("wants")));

    // order.created v2 widens amount to any number: BACKWARD compatible,
    // but the deployed aggregator reads integers: refused, naming it.
    let dir = host.dir.path().join("schemas");
    let mut v2: Value =
        serde_json::from_slice(&std::fs::read(dir.join("order.created/1.json")).unwrap()).unwrap();
    v2["properties"]["amount"] = json!({"type": "number", "minimum": 0});
    std::fs::write(dir.join("order.created/2.json"), v2.to_string()).unwrap();
    let refused = wait_for(Duration::from_secs(30), "the refusal of version 2", || {
        let s = host.get("/v1/schemas");
        let r = s["refused"]
            .as_object()?
            .iter()
            .find(|(f, _)| f.ends_with("order.created/2.json"))?
            .1
            .clone();
        Some(r.as_str()?.to_string())
    });
    assert!(
        refused.contains("aggregator") && refused.contains("/properties/amount"),
        "{refused}"
    );
    // `sluice schema check` against the running host: a tree whose version 1
    // differs from what the host registered is refused.
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("schemas");
    copy_dir(&dir, &tree);
    std::fs::remove_file(tree.join("order.created/2.json")).unwrap();
    let mut v1: Value =
        serde_json::from_slice(&std::fs::read(tree.join("order.created/1.json")).unwrap()).unwrap();
    v1["description"] = json!("edited after release");
    std::fs::write(tree.join("order.created/1.json"), v1.to_string()).unwrap();
    let tree_arg = tree.display().to_string();
    let check = sluice_tests::sluice(
        &[
            "schema",
            "check",
            "--dir",
            tree_arg.as_str(),
            "--against",
            host.addr.as_str(),
        ],
        None,
    );
    assert!(!check.ok, "{}", check.stdout);
    assert!(
        check
            .stdout
            .contains("version 1 was released and has changed"),
        "{}",
        check.stdout
    );
    let s = host.get("/v1/schemas");
    let created = s["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "order.created")
        .unwrap()
        .clone();
    assert_eq!(
        created["versions"].as_array().unwrap().len(),
        1,
        "{created}"
    );
}

#[test]
fn schema_check_names_a_breaking_change_and_passes_on_the_examples() {
    let examples = repo().join("examples/quickstart/schemas");
    let ok = sluice_tests::sluice(
        &[
            "schema".into(),
            "check".into(),
            "--dir".into(),
            examples.display().to_string(),
            "--manifest".into(),
            repo().join("modules/filter").display().to_string(),
            "--manifest".into(),
            repo().join("modules/aggregator").display().to_string(),
            "--manifest".into(),
            repo().join("modules/router").display().to_string(),
        ],
        None,
    );
    assert!(ok.ok, "{}{}", ok.stdout, ok.stderr);
    assert!(ok.stdout.contains("ok: 5 event types"), "{}", ok.stdout);

    // A fixture with a breaking version 2: amount narrowed to a string.
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("schemas");
    copy_dir(&examples, &dir);
    let mut v2: Value =
        serde_json::from_slice(&std::fs::read(dir.join("order.created/1.json")).unwrap()).unwrap();
    v2["properties"]["amount"] = json!({"type": "string"});
    v2["examples"] = json!([{"order_id": "o-1", "customer": "bob", "amount": "10000"}]);
    std::fs::write(dir.join("order.created/2.json"), v2.to_string()).unwrap();
    let bad = sluice_tests::sluice(
        &[
            "schema".to_string(),
            "check".into(),
            "--dir".into(),
            dir.display().to_string(),
            "--against".into(),
            examples.display().to_string(),
        ],
        None,
    );
    assert!(!bad.ok, "a breaking change passed: {}", bad.stdout);
    let line = bad
        .stdout
        .lines()
        .find(|l| l.contains("order.created/2.json"))
        .unwrap_or_else(|| panic!("{}", bad.stdout));
    assert!(
        line.contains("BACKWARD") && line.contains("/properties/amount"),
        "{line}"
    );
    assert!(bad.stderr.contains("problems in"), "{}", bad.stderr);
}

#[test]
fn the_confluent_client_registers_fetches_and_tests_compatibility() {
    let host = governed_host("");
    let venv = sluice_tests::obs::tools_dir("registry-tools.sh").join("venv");
    let r = sluice_tests::obs::json_line(
        std::process::Command::new(venv.join("bin/python"))
            .arg(repo().join("tests/registry/client.py"))
            .arg(&host.addr)
            .arg(TOKEN)
            .arg("shop.refund.issued"),
    );
    assert_eq!(r["latest_version"], 2, "{r}");
    assert_ne!(r["v1_id"], r["v2_id"], "{r}");
    assert_eq!(r["fetched_equal"], true, "{r}");
    assert_eq!(r["compatible_ok"], true, "{r}");
    assert_eq!(r["incompatible_ok"], false, "{r}");
    assert_eq!(r["incompatible_register_status"], 409, "{r}");
    assert!(
        r["subjects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "shop.refund.issued"),
        "{r}"
    );
    // The host's own view: the type and both versions, kept.
    let s = host.get("/v1/schemas");
    let t = s["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "shop.refund.issued")
        .unwrap_or_else(|| panic!("{s}"))
        .clone();
    assert_eq!(t["versions"].as_array().unwrap().len(), 2, "{t}");
    // A client without the token may read, not register.
    let (code, _) = api(
        &host.addr,
        "POST",
        "/subjects/shop.refund.issued/versions",
        Some(&json!({"schema": "{}", "schemaType": "JSON"})),
        None,
    );
    assert_eq!(code, 401);
}

/// The quickstart's schemas with an order.created version 2 that adds an
/// optional `channel`: backward compatible, not forward (version 1 is
/// closed), so the catalog has a diff and a forward break to show. The new
/// property is a `$ref` into `$defs`, which the AsyncAPI document must keep
/// resolvable.
fn catalog_schemas(dir: &Path) -> PathBuf {
    let to = dir.join("schemas");
    copy_dir(&repo().join("examples/quickstart/schemas"), &to);
    let mut v2: Value =
        serde_json::from_slice(&std::fs::read(to.join("order.created/1.json")).unwrap()).unwrap();
    v2["$defs"] = json!({"channel": {"type": "string", "enum": ["web", "store"]}});
    v2["properties"]["channel"] = json!({"$ref": "#/$defs/channel"});
    v2["examples"] =
        json!([{"order_id": "o-3", "customer": "carol", "amount": 990, "channel": "web"}]);
    std::fs::write(to.join("order.created/2.json"), v2.to_string()).unwrap();
    to
}

/// Ids of a parsed AsyncAPI list (`channels`, `operations`) with their
/// message ids, as the parser saw them.
fn parsed(doc: &Value, list: &str) -> BTreeMap<String, Vec<String>> {
    doc[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let ms = c["messages"].as_array().unwrap();
            (
                c["id"].as_str().unwrap().to_string(),
                ms.iter().map(|m| m.as_str().unwrap().to_string()).collect(),
            )
        })
        .collect()
}

/// What `tests/browser/asyncapi.mjs` (the npm `@asyncapi/parser`, and Ajv
/// for the payload schemas) says of `file`.
fn asyncapi_check(tools: &Path, file: &Path) -> Value {
    sluice_tests::obs::json_line(
        std::process::Command::new("node")
            .arg(repo().join("tests/browser/asyncapi.mjs"))
            .arg(file)
            .env("SLUICE_BROWSER_TOOLS", tools)
            .stdin(std::process::Stdio::null()),
    )
}

/// [`asyncapi_check`] `file`, asserting it is valid AsyncAPI 3.0 whose
/// payload schemas are valid JSON Schema 2020-12 and whose examples pass
/// them.
fn asyncapi_parse(tools: &Path, file: &Path) -> Value {
    let doc = asyncapi_check(tools, file);
    assert_eq!(doc["valid"], true, "{doc}");
    let payloads = doc["payloads"].as_array().unwrap();
    assert_eq!(
        payloads.len(),
        doc["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| !m["payload_type"].is_null())
            .count(),
        "every payload checked: {doc}"
    );
    for p in payloads {
        assert_eq!(p["schema_error"], Value::Null, "{p}");
        let examples = p["examples"].as_array().unwrap();
        assert!(
            !examples.is_empty() && examples.iter().all(|x| x == true),
            "{p}"
        );
    }
    assert_eq!(doc["version"], "3.0.0", "{doc}");
    // Severity 0 is an error, 1 a warning; 2 and 3 are information and hints
    // (such as "3.1.0 exists").
    let serious: Vec<&Value> = doc["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["severity"].as_u64().unwrap() < 2)
        .collect();
    assert!(serious.is_empty(), "{serious:?}");
    doc
}

/// Open the catalog in headless Chromium (`tests/browser/catalog.mjs`).
fn catalog_page(tools: &Path, args: &[&str], shot: &str) -> Value {
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(shot);
    let page = sluice_tests::obs::json_line(
        std::process::Command::new("node")
            .arg(repo().join("tests/browser/catalog.mjs"))
            .args(args)
            .arg(&shot)
            .env("SLUICE_BROWSER_TOOLS", tools)
            .stdin(std::process::Stdio::null()),
    );
    assert_eq!(page["error"], Value::Null, "{page}");
    assert_eq!(page["console_errors"], json!([]), "{page}");
    page
}

#[test]
fn the_catalog_is_valid_asyncapi_and_a_page_that_shows_every_topic_type_and_module() {
    let host = HostProc::start("[schemas]\ndir = \"schemas\"\n", |m| {
        catalog_schemas(m.parent().unwrap());
        stage(m, &["filter", "aggregator", "router"]);
    });
    wait_for(Duration::from_secs(30), "three modules running", || {
        (host
            .modules()
            .iter()
            .filter(|m| m.status == "running")
            .count()
            == 3)
            .then_some(())
    });
    let tools = sluice_tests::obs::tools_dir("browser-tools.sh");
    let out = tempfile::tempdir().unwrap();

    // From the running host.
    let from_host = out.path().join("host");
    let run = sluice_tests::sluice(
        &[
            "catalog",
            "--host",
            &host.addr,
            "--out",
            from_host.to_str().unwrap(),
        ],
        None,
    );
    assert!(run.ok, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("5 topics, 5 event types, 6 versions, 3 modules"),
        "{}",
        run.stdout
    );
    let doc = asyncapi_parse(&tools, &from_host.join("asyncapi.json"));
    let channels = parsed(&doc, "channels");
    let want_channels: BTreeMap<String, Vec<String>> = [
        ("large-orders", vec!["order.large.v1"]),
        ("order-events", vec![]),
        (
            "orders",
            vec!["order.created.v1", "order.created.v2", "payment.settled.v1"],
        ),
        ("payment-events", vec![]),
        ("totals", vec!["total.updated.v1"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(channels, want_channels);
    let ops = parsed(&doc, "operations");
    // The filter and the aggregator read version 1 only (their contracts);
    // the router takes any version.
    assert_eq!(ops["filter.receive.orders"], ["order.created.v1"]);
    assert_eq!(ops["aggregator.receive.orders"], ["order.created.v1"]);
    assert_eq!(
        ops["router.receive.orders"],
        ["order.created.v1", "order.created.v2", "payment.settled.v1"]
    );
    assert_eq!(ops["filter.send.large-orders"], ["order.large.v1"]);
    assert_eq!(ops["aggregator.send.totals"], ["total.updated.v1"]);
    assert_eq!(ops.len(), 7, "{ops:?}");
    let messages = doc["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 6, "{messages:?}");
    for m in messages {
        assert_eq!(m["payload_type"], "object", "{m}");
        assert!(m["examples"].as_u64().unwrap() >= 1, "{m}");
    }
    // The payload check can fail: a `$ref` left pointing inside the schema
    // alone, and an example that breaks its schema.
    let mut broken: Value =
        serde_json::from_slice(&std::fs::read(from_host.join("asyncapi.json")).unwrap()).unwrap();
    let v2 = &mut broken["components"]["messages"]["order.created.v2"];
    v2["payload"]["schema"]["properties"]["channel"]["$ref"] = json!("#/$defs/channel");
    broken["components"]["messages"]["order.created.v1"]["examples"][0]["payload"]["amount"] =
        json!("lots");
    let broken_file = out.path().join("broken.json");
    std::fs::write(&broken_file, broken.to_string()).unwrap();
    let checked = asyncapi_check(&tools, &broken_file);
    let payload = |id: &str| {
        checked["payloads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} in {checked}"))
    };
    let v2 = payload("order.created.v2");
    assert!(
        v2["schema_error"]
            .as_str()
            .is_some_and(|e| e.contains("#/$defs/channel")),
        "{v2}"
    );
    assert_eq!(
        payload("order.created.v1")["examples"],
        json!([false, true])
    );

    // The host answers the same document.
    let served = host.get("/v1/catalog/asyncapi.json");
    let written: Value =
        serde_json::from_slice(&std::fs::read(from_host.join("asyncapi.json")).unwrap()).unwrap();
    assert_eq!(served, written);

    // Offline, from the schema directory and the manifests: the same topics.
    let offline = out.path().join("offline");
    let mut args: Vec<String> = vec![
        "catalog".into(),
        "--dir".into(),
        catalog_schemas(out.path()).display().to_string(),
        "--out".into(),
        offline.display().to_string(),
    ];
    for m in ["filter", "aggregator", "router"] {
        args.push("--manifest".into());
        args.push(repo().join("modules").join(m).display().to_string());
    }
    let run = sluice_tests::sluice(&args, None);
    assert!(run.ok, "{}{}", run.stdout, run.stderr);
    let doc = asyncapi_parse(&tools, &offline.join("asyncapi.json"));
    assert_eq!(parsed(&doc, "channels"), want_channels);
    assert_eq!(parsed(&doc, "operations"), ops);

    // The page, reached from the dashboard's link.
    let page = catalog_page(
        &tools,
        &["--via-dashboard", &format!("{}/", host.addr)],
        "catalog.png",
    );
    assert!(
        page["url"].as_str().unwrap().ends_with("/catalog"),
        "{page}"
    );
    assert_eq!(
        page["counts"],
        json!({"topics": 5, "types": 5, "versions": 6, "modules": 3})
    );
    assert_eq!(page["asyncapi_href"], "/v1/catalog/asyncapi.json");
    let types: BTreeMap<String, Value> = page["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_string(), t.clone()))
        .collect();
    let created = &types["order.created"];
    assert_eq!(created["owner"], "shop-orders team", "{created}");
    assert_eq!(created["mode"], "BACKWARD");
    assert_eq!(
        created["consumers"],
        json!(["aggregator", "filter", "router"])
    );
    assert_eq!(created["versions"], 2);
    // Version 2's diff from version 1: the new property's lines and the
    // example, added; the old example, removed. Forward compatibility
    // breaks (version 1 is closed); backward does not.
    assert_eq!(created["diffs"], 1);
    assert!(created["added_lines"].as_u64().unwrap() >= 4, "{created}");
    assert!(created["removed_lines"].as_u64().unwrap() >= 1, "{created}");
    assert_eq!(created["breaks"], 1, "{created}");
    assert_eq!(created["examples"], 3, "{created}");
    assert_eq!(types["order.large"]["producers"], json!(["filter"]));
    assert_eq!(types["user.signup"]["consumers"], json!([]));
    let topics: Vec<&str> = page["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        topics,
        [
            "large-orders",
            "order-events",
            "orders",
            "payment-events",
            "totals"
        ]
    );
    // The filter box: "payment" leaves the type, the topics that carry or
    // are named for it, and the module that reads it.
    assert_eq!(
        page["filtered"],
        json!({"query": "payment", "types": ["payment.settled"],
               "topics": ["orders", "payment-events"], "modules": ["router"]})
    );

    // The written page, opened from disk: the same, and its AsyncAPI link
    // is the file beside it.
    let file = format!("file://{}", offline.join("index.html").display());
    let disk = catalog_page(&tools, &[&file], "catalog-file.png");
    assert_eq!(disk["counts"], page["counts"]);
    assert_eq!(disk["asyncapi_href"], "asyncapi.json");
    assert_eq!(disk["types"], page["types"]);
}

#[test]
fn where_reads_need_the_token_the_dashboard_opens_the_catalog_with_it() {
    // `extra` lands in the host's [api] table first.
    let host = HostProc::start("read-token = true\n[schemas]\ndir = \"schemas\"\n", |m| {
        catalog_schemas(m.parent().unwrap());
        stage(m, &["filter"]);
    });
    wait_for(Duration::from_secs(30), "the filter running", || {
        let (_, m) = api(&host.addr, "GET", "/v1/modules/filter", None, Some(TOKEN));
        (m["status"] == "running").then_some(())
    });
    let (code, body) = api(&host.addr, "GET", "/catalog", None, None);
    assert_eq!(code, 401, "{body}");
    let tools = sluice_tests::obs::tools_dir("browser-tools.sh");
    let page = catalog_page(
        &tools,
        &[
            "--via-dashboard",
            "--token",
            TOKEN,
            &format!("{}/", host.addr),
        ],
        "catalog-token.png",
    );
    // The dashboard's reads before it had the token were refused, and
    // nothing else went wrong.
    for e in page["dashboard_console_errors"].as_array().unwrap() {
        assert!(e.as_str().unwrap().contains("401 (Unauthorized)"), "{e}");
    }
    // Fetched with the token and shown from memory, its AsyncAPI link too.
    assert!(page["url"].as_str().unwrap().starts_with("blob:"), "{page}");
    assert!(
        page["asyncapi_href"].as_str().unwrap().starts_with("blob:"),
        "{page}"
    );
    assert_eq!(page["asyncapi_version"], "3.0.0");
    assert_eq!(
        page["counts"],
        json!({"topics": 2, "types": 5, "versions": 6, "modules": 1})
    );
}

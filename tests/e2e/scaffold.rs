//! `sluice new` for every language: the new module passes its own test,
//! builds, and runs in a host. And the unit tests of the JavaScript and
//! Python modules in `modules/` (native, with the in-memory hosts).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::*;

/// Run `sluice args` with the Rust builds of scaffolds in their own target
/// directory (kept between runs, apart from the one cargo test holds).
fn sluice_scaffold(args: &[&str]) -> CliRun {
    let target = sluice_bin()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("scaffolds");
    let out = Command::new(sluice_bin())
        .args(args)
        .env("CARGO_TARGET_DIR", target)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    CliRun {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn sluice_new_makes_a_module_that_tests_builds_and_runs_in_every_language() {
    let root = tempfile::tempdir().unwrap();
    let mut made: Vec<(String, PathBuf)> = Vec::new();
    for (lang, passed) in [
        ("rust", "test result: ok. 1 passed"),
        ("js", "# pass 1"),
        ("python", "OK"),
    ] {
        let name = format!("hello-{lang}");
        let dir = root.path().join(&name);
        let d = dir.to_str().unwrap();
        let r = sluice_scaffold(&["new", &name, "--lang", lang, "--dir", d]);
        assert!(r.ok, "new --lang {lang}: {}", r.stderr);
        let r = sluice_scaffold(&["test", d]);
        let out = format!("{}{}", r.stdout, r.stderr);
        assert!(r.ok && out.contains(passed), "test ({lang}):\n{out}");
        let r = sluice_scaffold(&["build", d]);
        assert!(r.ok, "build ({lang}): {}{}", r.stdout, r.stderr);
        assert!(
            dir.join(format!("dist/{name}.wasm")).is_file(),
            "{lang}: no component"
        );
        made.push((name, dir));
    }
    // An existing non-empty directory is not overwritten; a bad name is refused.
    let r = sluice_scaffold(&[
        "new",
        "again",
        "--lang",
        "js",
        "--dir",
        made[0].1.to_str().unwrap(),
    ]);
    assert!(!r.ok && r.stderr.contains("not empty"), "{}", r.stderr);
    let r = sluice_scaffold(&["new", "Bad_Name", "--lang", "js"]);
    assert!(
        !r.ok && r.stderr.contains("not a module name"),
        "{}",
        r.stderr
    );

    // Deployed as built, each counts its input per key.
    let host = HostProc::start("[log]\nauto-create-topics = true\n", |_| {});
    for (name, dir) in &made {
        let r = host.cli(&["deploy", dir.to_str().unwrap()]);
        assert!(r.ok, "deploy {name}: {}", r.stderr);
        let events: Vec<Value> = ["a", "b", "a"]
            .iter()
            .enumerate()
            .map(|(i, k)| {
                json!({"specversion": "1.0", "id": format!("{name}-{i}"), "source": "/t",
                                 "type": "thing.happened", "partitionkey": k, "data": {}})
            })
            .collect();
        produce(&host.addr, &format!("{name}-in"), &Value::Array(events)).unwrap();
    }
    for (name, _) in &made {
        host.wait_caught_up(name, Duration::from_secs(300));
        let state: Vec<(String, Value)> = host.state(name);
        assert_eq!(
            state,
            vec![
                ("count/a".to_string(), json!(2)),
                ("count/b".to_string(), json!(1))
            ],
            "{name}"
        );
        assert_eq!(host.read_all(&format!("{name}-out")).len(), 3, "{name}");
    }
}

#[test]
fn the_javascript_and_python_modules_pass_their_unit_tests() {
    let repo = sluice_tests::obs::repo();
    for m in ["aggregator-js", "aggregator-py", "snoop-js", "snoop-py"] {
        let out = Command::new(repo.join("scripts/build-module.sh"))
            .arg("test")
            .arg(repo.join("modules").join(m))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{m}:\n{text}");
        let passed = if m.ends_with("-js") {
            "# fail 0"
        } else {
            "\nOK"
        };
        assert!(text.contains(passed), "{m}:\n{text}");
    }
}

//! Builds the guest modules in `modules/` for `wasm32-wasip2` and stages each
//! as `<OUT_DIR>/modules/<name>/{module.toml,<name>.wasm}`, the layout a host's
//! modules directory uses. Tests and benchmarks find it through the
//! `SLUICE_GUEST_MODULES` env var set at compile time.
//!
//! The guests get their own target directory (beside this build's) so this
//! nested cargo never waits on the outer one's lock.

use std::path::{Path, PathBuf};
use std::process::Command;

const MODULES: &[&str] = &[
    "filter",
    "aggregator",
    "router",
    "flaky",
    "adversary",
    "counter",
];

/// Modules in other languages, built by `scripts/build-module.sh` (pinned
/// toolchains from `scripts/guest-tools.sh`) and staged as
/// `<name>/{module.toml,<name>.wasm}`.
const OTHER_LANGUAGES: &[&str] = &["aggregator-js", "aggregator-py", "snoop-js", "snoop-py"];

/// Second builds of a module with a cargo feature, staged as
/// `<staged name>/<module>.wasm` with the manifest's version replaced: a newer
/// version of the same module, for upgrade tests.
/// (module, feature, staged name, version)
const VARIANTS: &[(&str, &str, &str, &str)] = &[
    ("flaky", "fixed", "flaky-v2", "0.2.0"),
    ("counter", "v2", "counter-v2", "0.2.0"),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    // OUT_DIR = <target>/<profile>/build/<pkg-hash>/out
    let target = out
        .ancestors()
        .nth(4)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| out.join("t"));
    let guest_target = target.join("wasm-guests");
    for dir in [
        "modules",
        "guest-sdk",
        "wit",
        "scripts/build-module.sh",
        "scripts/guest-tools.sh",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let staged = out.join("modules");
    // Variants first: they share output file names with the plain builds,
    // so each is copied away before the next build overwrites it.
    for (m, feature, name, version) in VARIANTS {
        build_guests(&root, &guest_target, &[m], Some(feature));
        let dir = staged.join(name);
        stage_component(&guest_target, m, &dir);
        let manifest =
            std::fs::read_to_string(root.join("modules").join(m).join("module.toml")).unwrap();
        let mut lines: Vec<String> = manifest.lines().map(str::to_owned).collect();
        let v = lines
            .iter_mut()
            .find(|l| l.starts_with("version"))
            .expect("manifest has a version");
        *v = format!("version = \"{version}\"");
        std::fs::write(dir.join("module.toml"), lines.join("\n") + "\n").unwrap();
    }
    build_guests(&root, &guest_target, MODULES, None);
    for m in MODULES {
        let dir = staged.join(m);
        stage_component(&guest_target, m, &dir);
        std::fs::copy(
            root.join("modules").join(m).join("module.toml"),
            dir.join("module.toml"),
        )
        .unwrap();
    }
    for m in OTHER_LANGUAGES {
        build_other(&root, m, &staged.join(m));
    }
    println!("cargo:rustc-env=SLUICE_GUEST_MODULES={}", staged.display());
}

/// `cargo build` the guest packages for wasm32-wasip2, optionally with a feature.
fn build_guests(root: &Path, guest_target: &Path, packages: &[&str], feature: Option<&str>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--profile", "wasm", "--target", "wasm32-wasip2"])
        .arg("--target-dir")
        .arg(guest_target)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR");
    for m in packages {
        cmd.args(["-p", m]);
    }
    if let Some(f) = feature {
        cmd.args(["--features", f]);
    }
    let status = cmd
        .status()
        .expect("cannot run cargo to build the guest modules");
    if !status.success() {
        panic!(
            "building the guest modules for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`)"
        );
    }
}

/// Copy the freshly built `<m>.wasm` into `dir` (created if missing).
fn stage_component(guest_target: &Path, m: &str, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let wasm = guest_target
        .join("wasm32-wasip2/wasm")
        .join(format!("{m}.wasm"));
    std::fs::copy(&wasm, dir.join(format!("{m}.wasm")))
        .unwrap_or_else(|e| panic!("cannot copy {}: {e}", wasm.display()));
}

/// Build a JavaScript or Python module into `dir/<m>.wasm`, with its
/// manifest's `component` pointing there.
fn build_other(root: &Path, m: &str, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let wasm = dir.join(format!("{m}.wasm"));
    let status = Command::new(root.join("scripts/build-module.sh"))
        .arg("build")
        .arg(root.join("modules").join(m))
        .env("SLUICE_BUILD_OUT", &wasm)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("cannot run scripts/build-module.sh");
    if !status.success() {
        panic!(
            "building modules/{m} failed (toolchains: `scripts/guest-tools.sh install`; needs node and python3)"
        );
    }
    let manifest =
        std::fs::read_to_string(root.join("modules").join(m).join("module.toml")).unwrap();
    let manifest: Vec<String> = manifest
        .lines()
        .map(|l| {
            if l.starts_with("component") {
                format!("component = \"{m}.wasm\"")
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(dir.join("module.toml"), manifest.join("\n") + "\n").unwrap();
}

//! Builds the guest modules in `modules/` for `wasm32-wasip2` and stages each
//! as `<OUT_DIR>/modules/<name>/{module.toml,<name>.wasm}`, the layout a host's
//! modules directory uses. Tests and benchmarks find it through the
//! `SLUICE_GUEST_MODULES` env var set at compile time.
//!
//! The guests get their own target directory (beside this build's) so this
//! nested cargo never waits on the outer one's lock.

use std::path::{Path, PathBuf};
use std::process::Command;

const MODULES: &[&str] = &["filter", "aggregator", "router", "flaky", "adversary"];

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
    for dir in ["modules", "guest-sdk", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--profile", "wasm", "--target", "wasm32-wasip2"])
        .arg("--target-dir")
        .arg(&guest_target)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR");
    for m in MODULES {
        cmd.args(["-p", m]);
    }
    let status = cmd
        .status()
        .expect("cannot run cargo to build the guest modules");
    if !status.success() {
        panic!(
            "building the guest modules for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`)"
        );
    }
    let staged = out.join("modules");
    for m in MODULES {
        let dir = staged.join(m);
        std::fs::create_dir_all(&dir).unwrap();
        let wasm = guest_target
            .join("wasm32-wasip2/wasm")
            .join(format!("{m}.wasm"));
        std::fs::copy(&wasm, dir.join(format!("{m}.wasm")))
            .unwrap_or_else(|e| panic!("cannot copy {}: {e}", wasm.display()));
        std::fs::copy(
            root.join("modules").join(m).join("module.toml"),
            dir.join("module.toml"),
        )
        .unwrap();
    }
    println!("cargo:rustc-env=SLUICE_GUEST_MODULES={}", staged.display());
}

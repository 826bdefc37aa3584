//! `sluice new <name> --lang rust|js|python`: a module directory that builds
//! and passes its own test at once; `sluice build` / `sluice test` run its
//! `.sluice/build.sh`.
//!
//! The directory gets the source, `module.toml`, a test, a README, and
//! `.sluice/`: the WIT contract, the JavaScript and Python helpers, the
//! pinned toolchain lock files and the build script — the same files this
//! repository builds its own modules with (embedded at compile time).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// Languages `sluice new` scaffolds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Js,
    Python,
}

/// `(path under the module, contents)` of the shared `.sluice/` files.
const SHARED: &[(&str, &str)] = &[
    (
        ".sluice/build.sh",
        include_str!("../../../scripts/build-module.sh"),
    ),
    (
        ".sluice/tools.sh",
        include_str!("../../../scripts/guest-tools.sh"),
    ),
    (
        ".sluice/wit/processor.wit",
        include_str!("../../../wit/processor.wit"),
    ),
    (
        ".sluice/js/sluice.js",
        include_str!("../../../guest-sdk/js/sluice.js"),
    ),
    (
        ".sluice/js/sluice.d.ts",
        include_str!("../../../guest-sdk/js/sluice.d.ts"),
    ),
    (
        ".sluice/js/testing.mjs",
        include_str!("../../../guest-sdk/js/testing.mjs"),
    ),
    (
        ".sluice/js/testing/hooks.mjs",
        include_str!("../../../guest-sdk/js/testing/hooks.mjs"),
    ),
    (
        ".sluice/js/testing/host.js",
        include_str!("../../../guest-sdk/js/testing/host.js"),
    ),
    (
        ".sluice/js/package.json",
        include_str!("../../../guest-sdk/js/package.json"),
    ),
    (
        ".sluice/js/package-lock.json",
        include_str!("../../../guest-sdk/js/package-lock.json"),
    ),
    (
        ".sluice/python/sluice/__init__.py",
        include_str!("../../../guest-sdk/python/sluice/__init__.py"),
    ),
    (
        ".sluice/python/sluice/testing.py",
        include_str!("../../../guest-sdk/python/sluice/testing.py"),
    ),
    (
        ".sluice/python/requirements.lock",
        include_str!("../../../guest-sdk/python/requirements.lock"),
    ),
];

/// The Rust SDK this binary was built next to (a module made elsewhere can
/// point `--sdk` at its own copy).
fn default_rust_sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk")
}

fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    vars.iter().fold(template.to_string(), |t, (k, v)| {
        t.replace(&format!("{{{{{k}}}}}"), v)
    })
}

/// Create the module directory `dir` (default `./<name>`).
pub(super) fn new_module(
    name: &str,
    lang: Lang,
    dir: Option<PathBuf>,
    sdk: Option<PathBuf>,
) -> anyhow::Result<()> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !valid {
        bail!(
            "`{name}` is not a module name: lowercase letters, digits and `-`, starting with a letter"
        );
    }
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    let (lang_name, memory) = match lang {
        Lang::Rust => ("Rust", "64MiB"),
        Lang::Js => ("JavaScript", "128MiB"),
        Lang::Python => ("Python", "128MiB"),
    };
    let sdk = sdk.unwrap_or_else(default_rust_sdk);
    let sdk = sdk.canonicalize().unwrap_or(sdk);
    let shown = dir.display().to_string();
    let vars = [
        ("name", name),
        ("lang", lang_name),
        ("memory", memory),
        ("dir", shown.as_str()),
        ("sdk", sdk.to_str().unwrap_or_default()),
    ];
    let mut files: Vec<(&str, String)> = vec![
        (
            "module.toml",
            fill(include_str!("templates/module.toml"), &vars),
        ),
        (
            "README.md",
            fill(include_str!("templates/README.md"), &vars),
        ),
        (".gitignore", "dist/\ntarget/\n__pycache__/\n".into()),
    ];
    match lang {
        Lang::Rust => {
            files.push((
                "Cargo.toml",
                fill(include_str!("templates/rust_cargo.toml"), &vars),
            ));
            files.push((
                "src/lib.rs",
                fill(include_str!("templates/rust_lib.rs"), &vars),
            ));
        }
        Lang::Js => {
            files.push((
                "src/index.js",
                fill(include_str!("templates/js_index.js"), &vars),
            ));
            files.push((
                "test/handle.test.js",
                fill(include_str!("templates/js_test.js"), &vars),
            ));
        }
        Lang::Python => {
            files.push((
                "src/handler.py",
                fill(include_str!("templates/py_handler.py"), &vars),
            ));
            files.push((
                "tests/test_handler.py",
                fill(include_str!("templates/py_test.py"), &vars),
            ));
        }
    }
    files.extend(SHARED.iter().map(|(p, c)| (*p, c.to_string())));
    for (rel, text) in &files {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("files are under the module directory"))?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    #[cfg(unix)]
    for script in [".sluice/build.sh", ".sluice/tools.sh"] {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.join(script), std::fs::Permissions::from_mode(0o755))?;
    }
    eprintln!("created {lang_name} module `{name}` in {shown}");
    eprintln!("  sluice test {shown}     # its unit test");
    eprintln!("  sluice build {shown}    # -> {shown}/dist/{name}.wasm");
    eprintln!("  sluice deploy {shown}   # into a running host");
    Ok(())
}

/// Run the module's `.sluice/build.sh build|test`.
pub(super) fn run_build(what: &str, dir: &Path) -> anyhow::Result<()> {
    let script = dir.join(".sluice/build.sh");
    if !script.is_file() {
        bail!(
            "{} has no .sluice/build.sh (made by `sluice new`); in the Sluice repository use scripts/build-module.sh {what} <dir>",
            dir.display()
        );
    }
    let status = Command::new("bash")
        .arg(&script)
        .arg(what)
        .arg(dir)
        .status()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !status.success() {
        bail!("{what} failed for {}", dir.display());
    }
    Ok(())
}

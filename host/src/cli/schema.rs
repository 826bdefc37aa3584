//! `sluice schema check`: lint, compatibility and contracts of a schema
//! repository, offline (see [`crate::schema::check`]); exits non-zero naming
//! each problem.

use std::path::PathBuf;

use crate::schema::check::{self, Options};

/// Run the checks and print what they found.
pub(super) fn check(
    dir: PathBuf,
    against: Option<String>,
    manifests: Vec<PathBuf>,
) -> anyhow::Result<()> {
    let o = Options {
        dir,
        against,
        manifests,
    };
    let (findings, types, versions) = check::run(&o)?;
    for f in &findings {
        println!("error: {f}");
    }
    let checked = format!(
        "{types} event types, {versions} versions in {}{}{}",
        o.dir.display(),
        o.against
            .as_deref()
            .map(|a| format!(", against {a}"))
            .unwrap_or_default(),
        if o.manifests.is_empty() {
            String::new()
        } else {
            format!(", {} module manifests", o.manifests.len())
        }
    );
    if findings.is_empty() {
        println!("ok: {checked}");
        Ok(())
    } else {
        anyhow::bail!("{} problems in {checked}", findings.len())
    }
}

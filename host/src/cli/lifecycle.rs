//! `sluice deploy | rollback | undeploy | pause | resume | rewind`: clients of
//! the host's module lifecycle API.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde_json::{Value, json};

use super::client::Api;

/// Read a module directory (or its `module.toml`) and deploy it.
pub(super) fn deploy(api: &Api, path: &Path, start: Option<String>) -> anyhow::Result<()> {
    let manifest_path: PathBuf = if path.is_dir() {
        path.join("module.toml")
    } else {
        path.to_path_buf()
    };
    let manifest = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    // Validated fully by the host; here only to find the component.
    let parsed = crate::config::Manifest::parse_str(&manifest, &manifest_path)
        .map_err(anyhow::Error::msg)?;
    let dir = manifest_path.parent().unwrap_or(Path::new("."));
    let cpath = dir.join(&parsed.component);
    let component =
        std::fs::read(&cpath).with_context(|| format!("cannot read {}", cpath.display()))?;
    let mut body = json!({
        "manifest": manifest,
        "component": base64::engine::general_purpose::STANDARD.encode(&component),
    });
    if let Some(s) = start {
        body["start"] = json!(s);
    }
    let v = api.post("/v1/modules", Some(body))?;
    print_outcome(&v);
    Ok(())
}

fn print_outcome(v: &Value) {
    let m = v["module"].as_str().unwrap_or("?");
    let ver = v["version"].as_str().unwrap_or("?");
    let rev = v["revision"].as_u64().unwrap_or(0);
    match (v["action"].as_str(), v["previous"].as_str()) {
        (Some("unchanged"), _) => {
            eprintln!("{m} {ver} is already deployed (revision {rev}); nothing changed")
        }
        (Some(action), Some(prev)) => eprintln!("{action} {m}: {prev} -> {ver} (revision {rev})"),
        (Some(action), None) => eprintln!("{action} {m} {ver} (revision {rev})"),
        _ => eprintln!("{v}"),
    }
}

pub(super) fn rollback(api: &Api, module: &str, to: Option<String>) -> anyhow::Result<()> {
    let body = match to {
        Some(v) => json!({ "to": v }),
        None => json!({}),
    };
    let v = api.post(&format!("/v1/modules/{module}/rollback"), Some(body))?;
    print_outcome(&v);
    Ok(())
}

pub(super) fn undeploy(api: &Api, module: &str, purge: bool) -> anyhow::Result<()> {
    api.delete(&format!("/v1/modules/{module}?purge={purge}"))?;
    if purge {
        eprintln!("undeployed {module}; its state, idempotency set and cursors are deleted");
    } else {
        eprintln!(
            "undeployed {module}; its state and cursors are kept (deploy it again to continue, or undeploy --purge)"
        );
    }
    Ok(())
}

pub(super) fn pause(api: &Api, module: &str) -> anyhow::Result<()> {
    let v = api.post(&format!("/v1/modules/{module}/pause"), None)?;
    if v["was_running"].as_bool().unwrap_or(false) {
        eprintln!("paused {module}");
    } else {
        eprintln!("{module} was already paused");
    }
    Ok(())
}

pub(super) fn resume(api: &Api, module: &str) -> anyhow::Result<()> {
    let v = api.post(&format!("/v1/modules/{module}/resume"), None)?;
    match (
        v["was_paused"].as_bool().unwrap_or(false),
        v["was_quarantined"].as_bool().unwrap_or(false),
    ) {
        (false, false) => eprintln!("{module} was neither paused nor quarantined"),
        (true, _) => eprintln!("resumed {module}"),
        (false, true) => eprintln!("resumed {module} (was quarantined)"),
    }
    Ok(())
}

pub(super) fn rewind(
    api: &Api,
    module: &str,
    to: &str,
    reset_state: bool,
    wait: bool,
) -> anyhow::Result<()> {
    let v = api.post(
        &format!("/v1/modules/{module}/rewind"),
        Some(json!({ "to": to, "reset_state": reset_state })),
    )?;
    let plan: Vec<crate::RewoundPartition> =
        serde_json::from_value(v["partitions"].clone()).context("bad rewind answer")?;
    let total: u64 = plan.iter().map(|p| p.end.saturating_sub(p.to)).sum();
    eprintln!(
        "rewound {module} to {to} on {} partitions{}: {total} events to read again",
        plan.len(),
        if reset_state {
            ", state reset"
        } else {
            " (events already applied are skipped)"
        }
    );
    if !wait || total == 0 {
        return Ok(());
    }
    let mut bar = Progress::new(total);
    loop {
        let m = api.get(&format!("/v1/modules/{module}"))?;
        let info: crate::ModuleInfo =
            serde_json::from_value(m).context("bad module answer from the host")?;
        let done: u64 = plan
            .iter()
            .map(|r| {
                let cursor = info
                    .partitions
                    .iter()
                    .find(|p| p.topic == r.topic && p.partition == r.partition)
                    .map_or(r.to, |p| p.cursor);
                cursor.clamp(r.to, r.end.max(r.to)) - r.to
            })
            .sum();
        bar.show(done);
        if done >= total {
            bar.finish();
            return Ok(());
        }
        if info.status != "running" {
            bar.finish();
            bail!("{module} is {} ({done} of {total} read again)", info.status);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A one-line progress bar on stderr (a line every few seconds when stderr
/// is not a terminal).
struct Progress {
    total: u64,
    tty: bool,
    started: Instant,
    last_line: Option<Instant>,
}

impl Progress {
    fn new(total: u64) -> Progress {
        Progress {
            total,
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last_line: None,
        }
    }

    fn line(&self, done: u64) -> String {
        const WIDTH: usize = 30;
        let frac = done as f64 / self.total.max(1) as f64;
        let filled = ((frac * WIDTH as f64) as usize).min(WIDTH);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        format!(
            "[{}{}] {:>3}% {done}/{} events, {:.0}/s",
            "#".repeat(filled),
            " ".repeat(WIDTH - filled),
            (frac * 100.0) as u32,
            self.total,
            done as f64 / secs
        )
    }

    fn show(&mut self, done: u64) {
        if self.tty {
            eprint!("\r{}", self.line(done));
        } else if self
            .last_line
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(2))
            || done >= self.total
        {
            eprintln!("{}", self.line(done));
            self.last_line = Some(Instant::now());
        }
    }

    fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

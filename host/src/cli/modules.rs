//! `sluice modules | status`: what a running host has loaded and how far it
//! is, from its module and status API.

use anyhow::bail;

use super::client::Api;
use crate::pipeline::ModuleStatus;
use crate::source::Holder;

/// The module list as a table (or JSON with `json`).
pub(super) fn list(api: &Api, json: bool) -> anyhow::Result<()> {
    let mods = api.modules()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&mods)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<10} {:<10} {:>10} {:>12} {:>8} {:<6}  CURSORS (topic/partition: cursor (lag, who reads it if not this host))",
        "MODULE", "VERSION", "STATUS", "STATE KEYS", "STATE BYTES", "LAG", "LAG ST"
    );
    for m in mods {
        let lag: u64 = m.partitions.iter().map(|p| p.lag).sum();
        let cursors: Vec<String> = m
            .partitions
            .iter()
            .map(|p| {
                let who = match p.holder {
                    Holder::Here => "",
                    Holder::OtherMember => ", another host",
                    Holder::Unassigned => ", UNASSIGNED",
                    Holder::NotHere => ", not here",
                };
                let stale = if p.stale { ", end stale" } else { "" };
                format!(
                    "{}/{}: {} ({}{who}{stale})",
                    p.topic, p.partition, p.cursor, p.lag
                )
            })
            .collect();
        let status = m.status.to_string();
        let status = match status.char_indices().nth(10) {
            Some((cut, _)) => &status[..cut],
            None => &status,
        };
        println!(
            "{:<16} {:<10} {:<10} {:>10} {:>12} {:>8} {:<6}  {}",
            m.name,
            m.version.as_deref().unwrap_or("-"),
            status,
            m.state
                .as_ref()
                .map(|s| s.keys.to_string())
                .unwrap_or_else(|| "-".into()),
            m.state
                .as_ref()
                .map(|s| s.bytes.to_string())
                .unwrap_or_else(|| "-".into()),
            lag,
            m.lag_status.map(|s| s.as_str()).unwrap_or("-"),
            cursors.join(", ")
        );
        if let ModuleStatus::Failed(why) = &m.status {
            println!("  failed: {why}");
        }
    }
    Ok(())
}

/// One module, with its revision history, as JSON.
pub(super) fn show(api: &Api, module: &str) -> anyhow::Result<()> {
    let v = api.get(&format!("/v1/modules/{module}"))?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// Print the host's status; with `wait_idle`, wait up to that many seconds
/// for it to be idle and fail if it is not.
pub(super) fn status(api: &Api, wait_idle: Option<u64>) -> anyhow::Result<()> {
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_secs(wait_idle.unwrap_or(0));
    loop {
        let s = api.status()?;
        let idle = s["idle"].as_bool().unwrap_or(false);
        if idle || wait_idle.is_none() || std::time::Instant::now() >= deadline {
            println!("{s}");
            if wait_idle.is_some() && !idle {
                bail!("the host is not idle after {}s", wait_idle.unwrap_or(0));
            }
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

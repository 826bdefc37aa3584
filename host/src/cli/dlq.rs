//! `sluice dlq ls | show | replay | purge`: clients of the dead-letter API.

use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{Value, json};

use super::DlqCommand;
use super::client::Api;

/// Dead letters asked for at once by `show` and `replay --all`.
const MAX_LIST: usize = 1_000_000;

pub(super) fn run(cmd: DlqCommand) -> anyhow::Result<()> {
    match cmd {
        DlqCommand::Ls { module, api } => ls(&Api::new(&api), &module),
        DlqCommand::Show {
            module,
            ids,
            limit,
            api,
        } => show(&Api::new(&api), &module, &ids, limit),
        DlqCommand::Replay {
            module,
            ids,
            all,
            rate,
            no_wait,
            api,
        } => replay(&Api::new(&api), &module, ids, all, rate, !no_wait),
        DlqCommand::Purge { module, api } => {
            let v = Api::new(&api).post(&format!("/v1/modules/{module}/dlq/purge"), None)?;
            eprintln!(
                "purged {} dead letters of {module}",
                v["purged"].as_u64().unwrap_or(0)
            );
            Ok(())
        }
    }
}

fn ago(ms: Option<u64>) -> String {
    let Some(ms) = ms else {
        return "-".into();
    };
    let now = crate::source::now_ms();
    let secs = now.saturating_sub(ms) / 1000;
    format!(
        "{} ago ({})",
        humantime::format_duration(Duration::from_secs(secs)),
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms))
    )
}

fn ls(api: &Api, module: &str) -> anyhow::Result<()> {
    let s = api.dlq_summary(module)?;
    println!("{module}: {} dead letters in {}", s.count, s.topic);
    if s.count == 0 {
        return Ok(());
    }
    println!("  oldest: {}", ago(s.oldest_ms));
    println!("  newest: {}", ago(s.newest_ms));
    for (class, n) in &s.by_class {
        println!("  {class:<12} {n}");
    }
    Ok(())
}

fn show(api: &Api, module: &str, ids: &[String], limit: usize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let mut found = 0;
    let queries: Vec<Option<&str>> = if ids.is_empty() {
        vec![None]
    } else {
        ids.iter().map(|i| Some(i.as_str())).collect()
    };
    for id in queries {
        let events = api.dlq_events(module, id, limit.min(MAX_LIST))?;
        if let (Some(id), true) = (id, events.is_empty()) {
            eprintln!("{module} has no dead letter for event id `{id}`");
        }
        for e in events {
            writeln!(out, "{e}")?;
            found += 1;
        }
    }
    if found == 0 && ids.is_empty() {
        eprintln!("{module} has no dead letters");
    }
    Ok(())
}

/// The ids to replay, in dead-letter order, each once.
fn all_ids(api: &Api, module: &str) -> anyhow::Result<Vec<String>> {
    let mut seen = std::collections::HashSet::new();
    Ok(api
        .dlq_events(module, None, MAX_LIST)?
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .filter(|id| seen.insert(id.clone()))
        .collect())
}

fn replay(
    api: &Api,
    module: &str,
    ids: Vec<String>,
    all: bool,
    rate: Option<f64>,
    wait: bool,
) -> anyhow::Result<()> {
    if let Some(r) = rate
        && !(r.is_finite() && r > 0.0)
    {
        bail!("--rate must be a positive number of events per second, not {r}");
    }
    let ids = if all { all_ids(api, module)? } else { ids };
    if ids.is_empty() {
        eprintln!("{module} has no dead letters to replay");
        return Ok(());
    }
    // Ten requests a second under a rate limit; large ones without.
    let chunk = match rate {
        Some(r) => ((r / 10.0).ceil() as usize).max(1),
        None => 1000,
    };
    let start = Instant::now();
    let (mut sent, mut replayed) = (0usize, 0u64);
    let (mut missing, mut skipped) = (Vec::new(), 0usize);
    let mut last_report = Instant::now();
    for part in ids.chunks(chunk) {
        let v = api.post(
            &format!("/v1/modules/{module}/dlq/replay"),
            Some(json!({ "ids": part })),
        )?;
        sent += part.len();
        replayed += v["replayed"].as_u64().unwrap_or(0);
        skipped += v["skipped"].as_array().map_or(0, Vec::len);
        if let Some(m) = v["missing"].as_array() {
            missing.extend(m.iter().filter_map(Value::as_str).map(str::to_owned));
        }
        if last_report.elapsed() >= Duration::from_secs(1) || sent == ids.len() {
            eprintln!("replay {module}: queued {sent}/{}", ids.len());
            last_report = Instant::now();
        }
        if let Some(r) = rate {
            let due = start + Duration::from_secs_f64(sent as f64 / r);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    }
    for id in &missing {
        eprintln!("{module} has no dead letter for event id `{id}`");
    }
    if skipped > 0 {
        eprintln!("{skipped} dead letters cannot be replayed (undecodable input)");
    }
    if wait && replayed > 0 {
        wait_drained(api, module, replayed)?;
    }
    let s = api.dlq_summary(module)?;
    eprintln!(
        "replayed {replayed} events through {module}; it has {} dead letters now (events applied before are skipped; events that fail again are dead-lettered again)",
        s.count
    );
    Ok(())
}

/// Wait until the module has read its replay topic to the end, showing progress.
fn wait_drained(api: &Api, module: &str, queued: u64) -> anyhow::Result<()> {
    let replay_topic = format!("{module}.replay");
    let mut last = None;
    loop {
        let mods = api.modules()?;
        let Some(m) = mods.iter().find(|m| m.name == module) else {
            bail!("module {module} is gone");
        };
        let lag: u64 = m
            .partitions
            .iter()
            .filter(|p| p.topic == replay_topic)
            .map(|p| p.lag)
            .sum();
        if last != Some(lag) {
            eprintln!(
                "replay {module}: read {}/{queued}",
                queued.saturating_sub(lag)
            );
            last = Some(lag);
        }
        if lag == 0 {
            return Ok(());
        }
        if m.status != "running" {
            bail!("{module} is {} with {lag} replayed events unread", m.status);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

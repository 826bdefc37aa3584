//! `sluice produce | tail`: write events to a topic and read them back,
//! through the host's topic API.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::Context as _;

use super::client::Api;

/// Append JSON lines from `file` (or stdin) to `topic`, `batch` per request.
pub(super) fn produce(
    api: &Api,
    topic: &str,
    file: Option<PathBuf>,
    batch: usize,
) -> anyhow::Result<()> {
    let reader: Box<dyn BufRead> = match &file {
        Some(f) => Box::new(std::io::BufReader::new(
            std::fs::File::open(f).with_context(|| format!("cannot open {}", f.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let what = file
        .as_ref()
        .map(|f| f.display().to_string())
        .unwrap_or_else(|| "stdin".into());
    let mut chunk: Vec<serde_json::Value> = Vec::with_capacity(batch);
    let mut lines: Vec<usize> = Vec::with_capacity(batch);
    let mut total = 0usize;
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {what}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{what}:{}: not valid JSON", i + 1))?;
        chunk.push(v);
        lines.push(i + 1);
        if chunk.len() >= batch {
            total += api.produce(topic, &chunk, &what, &lines)?;
            chunk.clear();
            lines.clear();
        }
    }
    if !chunk.is_empty() {
        total += api.produce(topic, &chunk, &what, &lines)?;
    }
    eprintln!("produced {total} events to {topic}");
    Ok(())
}

/// One event as `partition/offset type key=... data`, with the failure of a
/// dead letter appended.
fn short_line(e: &serde_json::Value) -> String {
    let data = match (&e["data"], &e["data_base64"]) {
        (serde_json::Value::Null, serde_json::Value::Null) => String::new(),
        (serde_json::Value::Null, b) => format!("base64:{}", b.as_str().unwrap_or("")),
        (d, _) => d.to_string(),
    };
    let mut line = format!(
        "{}/{} {} key={} {}",
        e["partition"],
        e["offset"],
        e["type"].as_str().unwrap_or(""),
        e["partitionkey"].as_str().unwrap_or("-"),
        data
    );
    if let Some(class) = e["headers"]["sluice.dlq.class"].as_str() {
        line.push_str(&format!(
            "  [dead letter: {class}: {}]",
            e["headers"]["sluice.dlq.message"].as_str().unwrap_or("")
        ));
    }
    line
}

/// Print what `topic` holds (from its newest end with `latest`), then, with
/// `follow`, what it receives.
pub(super) fn tail(
    api: &Api,
    topic: &str,
    latest: bool,
    follow: bool,
    short: bool,
) -> anyhow::Result<()> {
    let info = api.topic(topic)?;
    let mut next: Vec<u64> = info
        .iter()
        .map(|(_, first, end)| if latest { *end } else { *first })
        .collect();
    let stdout = std::io::stdout();
    loop {
        let mut got = 0;
        for (p, from) in next.iter_mut().enumerate() {
            let wait = if follow && p == 0 { 500 } else { 0 };
            let (events, n) = api.read(topic, p as u32, *from, 1000, wait)?;
            let mut out = stdout.lock();
            for e in &events {
                if short {
                    writeln!(out, "{}", short_line(e))?;
                } else {
                    writeln!(out, "{e}")?;
                }
            }
            got += events.len();
            *from = n;
        }
        if got == 0 && !follow {
            return Ok(());
        }
    }
}

//! The `sluice` command line. `run` is the host; `produce`, `tail` and
//! `modules` are clients of a running host's HTTP API.

mod client;
mod dlq;

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

use crate::config::HostConfig;

/// Sluice: a WebAssembly stream-processor host with exactly-once state.
#[derive(Parser, Debug)]
#[command(name = "sluice", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the host: load modules, consume, serve the API.
    Run {
        /// Host config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Listen address, overriding `[api] listen`.
        #[arg(long, env = "SLUICE_LISTEN")]
        listen: Option<std::net::SocketAddr>,
        /// Log as JSON lines.
        #[arg(long)]
        log_json: bool,
    },
    /// Append events to a topic: JSON lines (CloudEvents structured mode) from a file or stdin.
    Produce {
        /// Topic to append to.
        topic: String,
        /// Read from this file instead of stdin.
        #[arg(long, short)]
        file: Option<PathBuf>,
        /// Events per request.
        #[arg(long, default_value_t = 500)]
        batch: usize,
        /// Host API address.
        #[arg(long, env = "SLUICE_ADDR", default_value = "http://127.0.0.1:7070")]
        addr: String,
    },
    /// Print the events a topic holds, then (unless --no-follow) what it receives.
    Tail {
        /// Topic to read.
        topic: String,
        /// Start from the newest events instead of the oldest.
        #[arg(long)]
        latest: bool,
        /// Exit after printing what the topic holds now.
        #[arg(long, short = 'n')]
        no_follow: bool,
        /// One short line per event (partition/offset, type, key, data) instead of JSON.
        #[arg(long)]
        short: bool,
        /// Host API address.
        #[arg(long, env = "SLUICE_ADDR", default_value = "http://127.0.0.1:7070")]
        addr: String,
    },
    /// Print the host's status (outbox backlog, total lag, idle) as JSON.
    Status {
        /// Wait up to this many seconds for the host to be idle (everything
        /// processed and published); exit 1 if it is not.
        #[arg(long, value_name = "SECS")]
        wait_idle: Option<u64>,
        /// Host API address.
        #[arg(long, env = "SLUICE_ADDR", default_value = "http://127.0.0.1:7070")]
        addr: String,
    },
    /// Bring a quarantined module back; it resumes from where it stopped.
    Resume {
        /// Module name.
        module: String,
        /// Host API address.
        #[arg(long, env = "SLUICE_ADDR", default_value = "http://127.0.0.1:7070")]
        addr: String,
    },
    /// Inspect, replay and purge a module's dead letters.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// List loaded modules with version, status, cursors, lag and state size.
    Modules {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Host API address.
        #[arg(long, env = "SLUICE_ADDR", default_value = "http://127.0.0.1:7070")]
        addr: String,
    },
}

/// `sluice dlq ...`
#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// How many dead letters a module has: oldest, newest, count per failure class.
    Ls {
        /// Module name.
        module: String,
        /// Host API address.
        #[arg(long, env = "SLUICE_ADDR", default_value = "http://127.0.0.1:7070")]
        addr: String,
    },
    /// Print dead letters as JSON lines (all, or those of the given event ids).
    Show {
        /// Module name.
        module: String,
        /// Only this event id (repeatable).
        #[arg(long = "id")]
        ids: Vec<String>,
        /// At most this many (per id).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Host API address.
        #[arg(long, env = "SLUICE_ADDR", default_value = "http://127.0.0.1:7070")]
        addr: String,
    },
    /// Send dead letters back through the module. Idempotent: an event
    /// already applied is skipped, so replaying twice applies nothing twice.
    Replay {
        /// Module name.
        module: String,
        /// Replay this event id (repeatable).
        #[arg(long = "id", required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Replay every dead letter the module has now.
        #[arg(long)]
        all: bool,
        /// At most this many events per second.
        #[arg(long, value_name = "N")]
        rate: Option<f64>,
        /// Return once queued, without waiting for the module to read them.
        #[arg(long)]
        no_wait: bool,
        /// Host API address.
        #[arg(long, env = "SLUICE_ADDR", default_value = "http://127.0.0.1:7070")]
        addr: String,
    },
    /// Delete the dead letters a module has now.
    Purge {
        /// Module name.
        module: String,
        /// Host API address.
        #[arg(long, env = "SLUICE_ADDR", default_value = "http://127.0.0.1:7070")]
        addr: String,
    },
}

/// Run the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run {
            config,
            listen,
            log_json,
        } => {
            crate::telemetry::init(log_json);
            run_host(&config, listen)
        }
        Command::Produce {
            topic,
            file,
            batch,
            addr,
        } => produce(&addr, &topic, file, batch.max(1)),
        Command::Tail {
            topic,
            latest,
            no_follow,
            short,
            addr,
        } => tail(&addr, &topic, latest, !no_follow, short),
        Command::Status { wait_idle, addr } => status(&addr, wait_idle),
        Command::Modules { json, addr } => modules(&addr, json),
        Command::Dlq { command } => dlq::run(command),
        Command::Resume { module, addr } => {
            let v = client::Api::new(&addr).resume(&module)?;
            if v["was_quarantined"].as_bool().unwrap_or(false) {
                eprintln!("resumed {module}");
            } else {
                eprintln!("{module} was not quarantined");
            }
            Ok(())
        }
    }
}

fn run_host(
    config_path: &std::path::Path,
    listen: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    if !config_path.exists() {
        bail!(
            "config file {} does not exist (see examples/quickstart/sluice.toml for one)",
            config_path.display()
        );
    }
    let mut config = HostConfig::load(config_path).map_err(anyhow::Error::msg)?;
    if let Some(l) = listen {
        config.api.listen = l;
    }
    let addr = config.api.listen;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("sluice-io")
        .build()
        .context("cannot start the async runtime")?;
    // Bind first: a port in use should fail before anything else starts.
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(addr))
        .with_context(|| format!("cannot listen on {addr} (is another sluice running? change [api] listen or pass --listen)"))?;
    let svc = crate::Service::start(config)?;
    tracing::info!(%addr, "listening");
    let app = crate::admin::router(svc.clone());
    let res = rt.block_on(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
    });
    let s: Arc<crate::Service> = svc;
    s.shutdown();
    res.context("API server failed")
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: finishing in-flight events");
}

fn produce(addr: &str, topic: &str, file: Option<PathBuf>, batch: usize) -> anyhow::Result<()> {
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
    let api = client::Api::new(addr);
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

fn status(addr: &str, wait_idle: Option<u64>) -> anyhow::Result<()> {
    let api = client::Api::new(addr);
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

fn tail(addr: &str, topic: &str, latest: bool, follow: bool, short: bool) -> anyhow::Result<()> {
    let api = client::Api::new(addr);
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

fn modules(addr: &str, json: bool) -> anyhow::Result<()> {
    let api = client::Api::new(addr);
    let mods = api.modules()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&mods)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<10} {:<10} {:>10} {:>12} {:>8}  CURSORS (topic/partition: cursor, lag)",
        "MODULE", "VERSION", "STATUS", "STATE KEYS", "STATE BYTES", "LAG"
    );
    for m in mods {
        let lag: u64 = m.partitions.iter().map(|p| p.lag).sum();
        let cursors: Vec<String> = m
            .partitions
            .iter()
            .map(|p| format!("{}/{}: {} ({})", p.topic, p.partition, p.cursor, p.lag))
            .collect();
        let status = if m.status.len() > 10 {
            &m.status[..10]
        } else {
            &m.status
        };
        println!(
            "{:<16} {:<10} {:<10} {:>10} {:>12} {:>8}  {}",
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
            cursors.join(", ")
        );
        if m.status.starts_with("failed") {
            println!("  {}", m.status);
        }
    }
    Ok(())
}

//! The `sluice` command line: the clap tree and [`run`], which dispatches
//! each command.
//!
//! `run` starts the host ([`crate::server`]); `new`, `build` and `test` work
//! on a module directory (`scaffold.rs`); every other command is a client of
//! a running host's HTTP API (`client.rs`), taking [`ApiArgs`], with its body
//! in `topics.rs`, `modules.rs`, `lifecycle.rs` or `dlq.rs`.

mod catalog;
mod client;
mod dlq;
mod lifecycle;
mod modules;
mod scaffold;
mod schema;
mod top;
mod topics;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Overrides, host_config};
use client::Api;

/// Sluice: a WebAssembly stream-processor host with exactly-once state.
#[derive(Parser, Debug)]
#[command(name = "sluice", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where a client command finds the host, and how it proves it may change
/// things: flattened into every command that talks to a running host.
#[derive(clap::Args, Debug, Clone)]
pub struct ApiArgs {
    /// Host API address.
    #[arg(long, env = "SLUICE_ADDR", default_value = "http://127.0.0.1:7070")]
    pub addr: String,
    /// API token for requests that change something (the host's `[api] token`,
    /// or what it generated into `<data-dir>/api-token`).
    #[arg(long, env = "SLUICE_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the host: load modules, consume, serve the API. Settings come from
    /// the config file, then environment variables, then flags (flags win).
    Run {
        /// Host config file (TOML). Without one, defaults plus env and flags.
        #[arg(long, short, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
        /// Data directory, overriding `data-dir`.
        #[arg(long, env = "SLUICE_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Modules directory, overriding `modules-dir`.
        #[arg(long, env = "SLUICE_MODULES_DIR")]
        modules_dir: Option<PathBuf>,
        /// Listen address, overriding `[api] listen`.
        #[arg(long, env = "SLUICE_LISTEN")]
        listen: Option<std::net::SocketAddr>,
        /// Kafka bootstrap servers, overriding (or adding) `[kafka] "bootstrap.servers"`.
        #[arg(long, env = "SLUICE_KAFKA_BOOTSTRAP_SERVERS")]
        kafka_bootstrap_servers: Option<String>,
        /// How long SIGTERM waits for in-flight events and the outbox
        /// (overriding `shutdown-timeout`), e.g. "30s".
        #[arg(long, env = "SLUICE_SHUTDOWN_TIMEOUT")]
        shutdown_timeout: Option<String>,
        /// Log format.
        #[arg(long, env = "SLUICE_LOG_FORMAT", value_parser = ["text", "json"], default_value = "text")]
        log_format: String,
        /// Log as JSON lines (same as --log-format json).
        #[arg(long)]
        log_json: bool,
        /// API token, overriding `[api] token` (at least 16 characters).
        #[arg(long, env = "SLUICE_API_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Deploy a module directory (or its module.toml) to a running host, or
    /// upgrade the module to it. Nothing changes if the host refuses it.
    Deploy {
        /// A module directory with module.toml, or the module.toml file.
        path: PathBuf,
        /// Where a new module starts reading: earliest, latest, an RFC 3339
        /// time or an offset (overrides the manifest's `start`).
        #[arg(long)]
        start: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Create a module directory (source, manifest, a test, the pinned build)
    /// that builds and passes its test at once.
    New {
        /// Module name: lowercase letters, digits and `-`.
        name: String,
        /// Language of the module.
        #[arg(long, value_enum)]
        lang: scaffold::Lang,
        /// Directory to create (default: ./<name>).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Rust only: the sluice-guest SDK to depend on (default: the one
        /// this sluice was built with).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build a module made by `sluice new` into the component its manifest names.
    Build {
        /// The module directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Run the unit tests of a module made by `sluice new` (in-memory host).
    Test {
        /// The module directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Run an earlier revision of a module again (state carries over).
    Rollback {
        /// Module name.
        module: String,
        /// The version to return to (default: the revision before the current one).
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Stop and unload a module. Its state is kept unless --purge.
    Undeploy {
        /// Module name.
        module: String,
        /// Also delete its state, idempotency set and cursors.
        #[arg(long)]
        purge: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Stop a module consuming (kept across restarts) until `sluice resume`.
    Pause {
        /// Module name.
        module: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Move a module's cursors to a time or offset and read from there again.
    /// Without --reset-state, events it already applied are skipped (its
    /// state does not change); with it, state is rebuilt from what it reads.
    Rewind {
        /// Module name.
        module: String,
        /// earliest, latest, an RFC 3339 time, or an offset (in every partition).
        #[arg(long)]
        to: String,
        /// Drop the module's state and idempotency set first.
        #[arg(long)]
        reset_state: bool,
        /// Return at once instead of showing progress until it has caught up.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        api: ApiArgs,
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
        #[command(flatten)]
        api: ApiArgs,
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
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Print the host's status (outbox backlog, total lag, idle) as JSON.
    Status {
        /// Wait up to this many seconds for the host to be idle (everything
        /// processed and published); exit 1 if it is not.
        #[arg(long, value_name = "SECS")]
        wait_idle: Option<u64>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Bring a paused or quarantined module back; it continues from where it stopped.
    Resume {
        /// Module name.
        module: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Inspect, replay and purge a module's dead letters.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Event schemas: check a schema repository (for CI).
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
    /// Write the event catalog: an AsyncAPI 3.0 document (`asyncapi.json`)
    /// and a static page (`index.html`) with every topic, event type and
    /// version (with diffs), owner, producers, consumers and examples.
    Catalog {
        /// The schema repository (`<type>/type.toml`, `<type>/<version>.json`).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// A module directory or module.toml whose topics and types to add
        /// (repeatable).
        #[arg(long = "manifest")]
        manifests: Vec<PathBuf>,
        /// A running host's API address: its registered schemas (unless
        /// --dir) and its deployed modules.
        #[arg(long)]
        host: Option<String>,
        /// API token, if the host's reads need one.
        #[arg(long, env = "SLUICE_API_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// The catalog's title (default: the host's service name, or "Sluice").
        #[arg(long)]
        title: Option<String>,
        /// Directory to write into.
        #[arg(long, default_value = "catalog")]
        out: PathBuf,
    },
    /// Watch a host in the terminal: modules, status, lag status, rates,
    /// dead letters, recent failures (q quits).
    Top {
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
        /// Print one frame as text and exit.
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List loaded modules with version, status, cursors, lag and state size
    /// (or one module, with its revision history, as JSON).
    Modules {
        /// Show only this module, with its revisions.
        module: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// `sluice schema ...`
#[derive(Subcommand, Debug)]
pub enum SchemaCommand {
    /// Lint the schemas, check each version's compatibility with the earlier
    /// ones, that released versions are unchanged, and modules' contracts;
    /// exit 1 naming each problem.
    Check {
        /// The schema repository (`<type>/type.toml`, `<type>/<version>.json`).
        #[arg(long, default_value = "schemas")]
        dir: PathBuf,
        /// What was released: a directory, `git:<ref>` (e.g. `git:origin/main`),
        /// or a running host's address (what it has registered; the token
        /// from SLUICE_API_TOKEN if its reads need one).
        #[arg(long)]
        against: Option<String>,
        /// A module directory or module.toml whose `[[consumes]]` and
        /// `[[produces]]` to check (repeatable).
        #[arg(long = "manifest")]
        manifests: Vec<PathBuf>,
    },
}

/// `sluice dlq ...`
#[derive(Subcommand, Debug)]
pub enum DlqCommand {
    /// How many dead letters a module has: oldest, newest, count per failure class.
    Ls {
        /// Module name.
        module: String,
        #[command(flatten)]
        api: ApiArgs,
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
        #[command(flatten)]
        api: ApiArgs,
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
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Delete the dead letters a module has now.
    Purge {
        /// Module name.
        module: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// Run the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run {
            config,
            data_dir,
            modules_dir,
            listen,
            kafka_bootstrap_servers,
            shutdown_timeout,
            log_format,
            log_json,
            token,
        } => {
            crate::telemetry::init(log_json || log_format == "json");
            let overrides = Overrides {
                data_dir,
                modules_dir,
                listen,
                token,
                kafka_bootstrap_servers,
                shutdown_timeout,
            };
            let config = host_config(config.as_deref(), overrides)?;
            crate::server::run(config)
        }
        Command::Produce {
            topic,
            file,
            batch,
            api,
        } => topics::produce(&Api::new(&api), &topic, file, batch.max(1)),
        Command::Tail {
            topic,
            latest,
            no_follow,
            short,
            api,
        } => topics::tail(&Api::new(&api), &topic, latest, !no_follow, short),
        Command::Status { wait_idle, api } => modules::status(&Api::new(&api), wait_idle),
        Command::Schema {
            command:
                SchemaCommand::Check {
                    dir,
                    against,
                    manifests,
                },
        } => schema::check(dir, against, manifests),
        Command::Catalog {
            dir,
            manifests,
            host,
            token,
            title,
            out,
        } => catalog::run(catalog::Args {
            dir,
            manifests,
            host: host.map(|addr| ApiArgs { addr, token }),
            title,
            out,
        }),
        Command::Top {
            interval,
            once,
            api,
        } => top::run(
            &Api::new(&api),
            std::time::Duration::from_secs_f64(interval.clamp(0.1, 3600.0)),
            once,
        ),
        Command::Modules { module, json, api } => match module {
            Some(m) => modules::show(&Api::new(&api), &m),
            None => modules::list(&Api::new(&api), json),
        },
        Command::Dlq { command } => dlq::run(command),
        Command::Resume { module, api } => lifecycle::resume(&Api::new(&api), &module),
        Command::Deploy { path, start, api } => lifecycle::deploy(&Api::new(&api), &path, start),
        Command::Rollback { module, to, api } => lifecycle::rollback(&Api::new(&api), &module, to),
        Command::Undeploy { module, purge, api } => {
            lifecycle::undeploy(&Api::new(&api), &module, purge)
        }
        Command::Pause { module, api } => lifecycle::pause(&Api::new(&api), &module),
        Command::New {
            name,
            lang,
            dir,
            sdk,
        } => scaffold::new_module(&name, lang, dir, sdk),
        Command::Build { dir } => scaffold::run_build("build", &dir),
        Command::Test { dir } => scaffold::run_build("test", &dir),
        Command::Rewind {
            module,
            to,
            reset_state,
            no_wait,
            api,
        } => lifecycle::rewind(&Api::new(&api), &module, &to, reset_state, !no_wait),
    }
}

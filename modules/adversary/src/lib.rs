//! Test module that misbehaves on request. Each event's `mode` says how:
//! `loop` (never returns: the deadline must stop it), `memory` (allocates until
//! the memory limit), `recursion` (exhausts the wasm stack), `panic`, `flood`
//! (emits far more events than `limits.max-emits`), `state-bomb` (writes a value
//! larger than `limits.max-state-value`); `busy-under`/`sleep-under` spin or
//! sleep for 40 ms and `busy-over`/`sleep-over` for 60 s (its manifest's deadline
//! is 100 ms: the first two must succeed, the last two be cut off at the
//! deadline, the sleep too); `fs`, `env`, `net` try to read a
//! file, an environment variable and open a socket, and emit what happened;
//! `header-bomb`, `key-bomb` (emit events with a 4 MiB header or key),
//! `state-key-bomb` (a state write under a 4 MiB key), `log-bomb` (log lines
//! of 4 MiB): each byte a module hands the host counts against its limits;
//! `print` writes a line to stdout and one to stderr; `busy` spins for the
//! event's `ms` times the module's `busy-scale` config (default 1) and then
//! succeeds, for tests that need one host slower than another;
//! anything else is handled normally.
//! The host must contain each of them and keep every other module running.

use serde::Deserialize;
use sluice_guest::{Event, Output, Result, emit, state};
use std::hint::black_box;
use std::time::{Duration, Instant};

#[derive(Deserialize)]
struct Input<'a> {
    #[serde(default)]
    mode: &'a str,
    #[serde(default)]
    ms: u64,
    /// For `net`: the loopback port to try (a listening one, in the tests).
    #[serde(default)]
    port: u16,
}

fn recurse(n: u64) -> u64 {
    if black_box(n) == 0 {
        0
    } else {
        1 + black_box(recurse(n - 1))
    }
}

/// Well under the 100 ms deadline, with room for a loaded machine.
const UNDER: Duration = Duration::from_millis(40);
/// Far past it.
const OVER: Duration = Duration::from_secs(60);

/// What the bombs hand the host: far past any per-event limit, inside the
/// module's own 32 MiB of memory.
const BOMB: usize = 4 << 20;

/// Spin (calling the clock, as a busy-wait does) for `d`, then succeed.
fn busy(d: Duration, event: &Event) -> Result {
    let start = Instant::now();
    while start.elapsed() < d {
        black_box(());
    }
    emit("adversary-out", "ok", event.id.as_bytes().to_vec())
}

fn report<E: std::fmt::Display>(what: &str, r: std::result::Result<(), E>) -> Result {
    let outcome = match r {
        Ok(()) => format!("{what}: GRANTED"),
        Err(e) => format!("{what}: denied: {e}"),
    };
    emit("adversary-out", "authority", outcome.into_bytes())
}

/// Misbehave as the event asks.
pub fn handle(event: &Event) -> Result {
    let input: Input = event.json()?;
    match input.mode {
        "loop" => loop {
            black_box(());
        },
        "memory" => {
            // Doubling reservations reach any limit in a few steps, without
            // spending the deadline on writing the pages.
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            let mut size = 1usize << 20;
            loop {
                hoard.push(Vec::with_capacity(size));
                black_box(&hoard);
                size = size.saturating_mul(2);
            }
        }
        "recursion" => {
            black_box(recurse(u64::MAX));
            Ok(())
        }
        "panic" => panic!("event {} asked for a panic", event.id),
        "flood" => {
            for i in 0..100_000u32 {
                emit("adversary-out", "flood", i.to_le_bytes().to_vec())?;
            }
            Ok(())
        }
        "state-bomb" => state::set("bomb", vec![0u8; 8 << 20]),
        "header-bomb" => {
            let big = vec![b'h'; BOMB];
            for _ in 0..4 {
                Output::new("adversary-out", "bomb")
                    .header("x-bomb", &big)
                    .send()?;
            }
            Ok(())
        }
        "key-bomb" => {
            let big = vec![b'k'; BOMB];
            for _ in 0..4 {
                Output::new("adversary-out", "bomb").key(&big).send()?;
            }
            Ok(())
        }
        "state-key-bomb" => state::set(vec![b's'; BOMB], b"v"),
        "log-bomb" => {
            let big = "l".repeat(BOMB);
            for _ in 0..4 {
                sluice_guest::log::log(sluice_guest::log::Level::Info, &big);
            }
            emit("adversary-out", "ok", event.id.as_bytes().to_vec())
        }
        "busy-under" => busy(UNDER, event),
        "busy" => {
            let scale: u64 = sluice_guest::config::get("busy-scale")
                .and_then(|s| s.parse().ok())
                .unwrap_or(1);
            busy(Duration::from_millis(input.ms * scale), event)
        }
        "busy-over" => busy(OVER, event),
        "sleep-under" => {
            std::thread::sleep(UNDER);
            emit("adversary-out", "ok", event.id.as_bytes().to_vec())
        }
        "sleep-over" => {
            std::thread::sleep(OVER);
            emit("adversary-out", "slept", event.id.as_bytes().to_vec())
        }
        // Ambient authority: each must fail inside the guest. The outcome is
        // emitted so the test can see what the module got.
        "fs" => report("fs", std::fs::read_to_string("/etc/passwd").map(|_| ())),
        "env" => report("env", std::env::var("HOME").map(|_| ())),
        "print" => {
            println!("stdout line from {}", event.id);
            eprintln!("stderr line from {}", event.id);
            Ok(())
        }
        "net" => report(
            "net",
            std::net::TcpStream::connect(("127.0.0.1", input.port)).map(|_| ()),
        ),
        _ => emit("adversary-out", "ok", event.id.as_bytes().to_vec()),
    }
}

sluice_guest::export!(handle);

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_guest::testing::{TestEvent, TestHost};

    #[test]
    fn harmless_modes_emit_once() {
        let host = TestHost::install();
        TestEvent::json("t", "x", r#"{"mode":"ok"}"#)
            .with(handle)
            .unwrap();
        assert_eq!(host.emitted().len(), 1);
        assert_eq!(recurse(10), 10);
    }
}

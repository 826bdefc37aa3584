//! What schema validation costs: the full-path filter and aggregator rows
//! of the pipeline bench without schemas (the baseline) and with a schema
//! for every type they read and write (each input validated as it is read,
//! each output as it is emitted; closed content models, ~20 keywords per
//! input schema, compiled once per version).
//!
//! Then, in one process, what one event's data costs to read and validate:
//! into a `serde_json::Value` (what the host did first; the baseline) and
//! into the tape the host reads them into now (`sluice::schema::tape`).
//!
//! `cargo bench -p sluice-tests --bench validation` (`SLUICE_BENCH_EVENTS`,
//! default 100000; `SLUICE_BENCH_ROUNDS`, default 5); how the variants are
//! run: [`sluice_tests::bench::compare`]. Prints Markdown tables for
//! docs/BENCHMARKS.md.

use std::path::Path;

use serde_json::json;
use sluice_tests::bench::{self, Tune};

/// The schema of the bench's orders (`order.created`, and the filter's
/// `order.large`): closed objects, ~20 keywords, a nested array of closed
/// objects and a pattern.
fn order_schema() -> serde_json::Value {
    let item = json!({"type": "object", "additionalProperties": false,
        "required": ["sku", "qty", "price"],
        "properties": {"sku": {"type": "string", "pattern": "^SKU-[0-9]+$"},
                       "qty": {"type": "integer", "minimum": 1},
                       "price": {"type": "integer", "minimum": 0}}});
    json!({"type": "object", "additionalProperties": false,
        "required": ["order_id", "customer", "amount"],
        "properties": {"order_id": {"type": "string"}, "customer": {"type": "string"},
                       "amount": {"type": "integer", "minimum": 0},
                       "currency": {"enum": ["EUR", "USD", "GBP"]},
                       "channel": {"type": "string"}, "note": {"type": "string"},
                       "items": {"type": "array", "items": item}},
        "examples": []})
}

/// Schemas of `order.created` (the bench's orders), `order.large` (the
/// filter's outputs) and `total.updated` (the aggregator's).
fn write_schemas(dir: &Path) {
    let order = order_schema();
    let total = json!({"type": "object", "additionalProperties": false,
        "required": ["customer", "total", "count", "input"],
        "properties": {"customer": {"type": "string"}, "total": {"type": "integer"},
                       "count": {"type": "integer"}, "input": {"type": "string"}}});
    for (ty, schema) in [
        ("order.created", &order),
        ("order.large", &order),
        ("total.updated", &total),
    ] {
        let d = dir.join(ty);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("type.toml"),
            "owner = \"bench\"\ndescription = \"bench\"\n",
        )
        .unwrap();
        std::fs::write(d.join("1.json"), schema.to_string()).unwrap();
    }
}

fn main() {
    let Some(n) = sluice_tests::bench_size("SLUICE_BENCH_EVENTS", 100_000) else {
        return;
    };
    let evs = bench::order_events(n);
    let dir = tempfile::tempdir().unwrap();
    write_schemas(dir.path());
    let schemas = dir.path().to_path_buf();
    let variants: [(&str, Tune); 2] = [
        ("no schemas", Box::new(|_| {})),
        (
            "every input and output validated",
            Box::new(move |c| c.schemas.dir = Some(schemas.clone())),
        ),
    ];
    bench::compare(&["filter", "aggregator"], &variants, &evs);
    if std::env::var_os("SLUICE_BENCH_ONLY").is_none() {
        per_document(&evs, &order_schema());
    }
}

/// Nanoseconds per event's data (best of the rounds) to read it into a
/// `Value` or a tape, and to read and validate it each way.
fn per_document(evs: &[sluice_wire::OwnedEvent], schema: &serde_json::Value) {
    use sluice::schema::tape::{Tape, TapeJson};
    let rounds = sluice_tests::bench_size("SLUICE_BENCH_ROUNDS", 5).unwrap_or(5);
    let by_value = sluice::schema::compile(schema).unwrap();
    let by_tape = sluice::schema::compile_for::<TapeJson>(schema).unwrap();
    let time = |f: &dyn Fn(&[u8]) -> bool| {
        let best = bench::best_of(rounds, || {
            let t = std::time::Instant::now();
            for e in evs {
                assert!(f(std::hint::black_box(&e.data)));
            }
            t.elapsed()
        });
        best.as_nanos() as f64 / evs.len() as f64
    };
    // The documents read are looked at (`black_box`), so that no reading
    // is optimized away.
    let value_read = time(&|d| {
        std::hint::black_box(serde_json::from_slice::<serde_json::Value>(d).unwrap());
        true
    });
    let tape_read = time(&|d| {
        std::hint::black_box(Tape::parse(d).unwrap());
        true
    });
    let value_both = time(&|d| by_value.is_valid(&serde_json::from_slice(d).unwrap()));
    let tape_both = time(&|d| by_tape.is_valid(Tape::parse(d).unwrap().root()));
    println!();
    println!(
        "| one event's data ({} bytes on average) | ns (best of {rounds}) | vs `serde_json::Value` |",
        evs.iter().map(|e| e.data.len()).sum::<usize>() / evs.len()
    );
    println!("|---|---:|---:|");
    println!("| read into a `serde_json::Value` | {value_read:.0} | 1.00 |");
    println!(
        "| read into a tape | {tape_read:.0} | {:.2} |",
        tape_read / value_read
    );
    println!("| read and validated, `Value` | {value_both:.0} | 1.00 |");
    println!(
        "| read and validated, tape | {tape_both:.0} | {:.2} |",
        tape_both / value_both
    );
}

//! What schema validation costs: the full-path filter and aggregator rows
//! of the pipeline bench without schemas (the baseline) and with a schema
//! for every type they read and write (each input validated as it is read,
//! each output as it is emitted; closed content models, ~20 keywords per
//! input schema, compiled once per version).
//!
//! `cargo bench -p sluice-tests --bench validation` (`SLUICE_BENCH_EVENTS`,
//! default 100000; `SLUICE_BENCH_ROUNDS`, default 5); how the variants are
//! run: [`sluice_tests::bench::compare`]. Prints a Markdown table for
//! docs/BENCHMARKS.md.

use std::path::Path;

use serde_json::json;
use sluice_tests::bench::{self, Tune};

/// Schemas of `order.created` (the bench's orders), `order.large` (the
/// filter's outputs) and `total.updated` (the aggregator's).
fn write_schemas(dir: &Path) {
    let item = json!({"type": "object", "additionalProperties": false,
        "required": ["sku", "qty", "price"],
        "properties": {"sku": {"type": "string", "pattern": "^SKU-[0-9]+$"},
                       "qty": {"type": "integer", "minimum": 1},
                       "price": {"type": "integer", "minimum": 0}}});
    let order = json!({"type": "object", "additionalProperties": false,
        "required": ["order_id", "customer", "amount"],
        "properties": {"order_id": {"type": "string"}, "customer": {"type": "string"},
                       "amount": {"type": "integer", "minimum": 0},
                       "currency": {"enum": ["EUR", "USD", "GBP"]},
                       "channel": {"type": "string"}, "note": {"type": "string"},
                       "items": {"type": "array", "items": item}},
        "examples": []});
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
}

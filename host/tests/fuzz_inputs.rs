//! Property tests over everything that parses outside input: the CloudEvents
//! ingest decoders (structured JSON, HTTP binary mode), the stored event frame,
//! and the manifest parser. None may panic, whatever the bytes; valid inputs
//! round-trip. Bounded (proptest's default case count) so CI stays fast.

use proptest::prelude::*;
use sluice::config::Manifest;
use sluice::source::ingest;
use sluice_wire::{BatchWriter, EventRef, OwnedEvent, batch_frames};

const MANIFEST: &str = r#"name = "m"
version = "1.0.0"
component = "m.wasm"
[[subscribe]]
topic = "orders"
types = ["a"]
start = "earliest"
[[produce]]
topic = "out"
[limits]
memory = "64MiB"
deadline = "100ms"
[retry]
max-attempts = 3
backoff = { initial = "10ms", max = "1s" }
[idempotency]
ttl = "7d"
[config]
k = "v"
"#;

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        ".{0,12}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_string()),
                    Just("type".to_string()),
                    Just("source".to_string()),
                    Just("time".to_string()),
                    Just("data".to_string()),
                    Just("data_base64".to_string()),
                    Just("partitionkey".to_string()),
                    Just("specversion".to_string()),
                    Just("datacontenttype".to_string()),
                    "[a-zA-Z_-]{1,8}",
                ],
                inner,
                0..8
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn structured_json_never_panics(v in json_value()) {
        let body = serde_json::to_vec(&v).unwrap();
        let _ = ingest::parse_json(&body);
    }

    #[test]
    fn arbitrary_bytes_as_json_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = ingest::parse_json(&body);
    }

    #[test]
    fn binary_mode_never_panics(
        headers in prop::collection::vec(("(ce-)?[a-z]{0,12}", ".{0,16}"), 0..8),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let _ = ingest::binary(&headers, Some("application/octet-stream"), &body);
    }

    #[test]
    fn frames_never_panic_and_valid_ones_round_trip(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        id in ".{0,16}", data in prop::collection::vec(any::<u8>(), 0..64),
        key in prop::option::of(prop::collection::vec(any::<u8>(), 0..8)),
        offset in any::<u64>(),
    ) {
        let _ = EventRef::decode(&bytes);
        let _ = batch_frames(&bytes).map(|f| f.count());
        let e = OwnedEvent { id, source: "/s".into(), ty: "t".into(), data, key, topic: "t".into(), offset, ..Default::default() };
        let frame = e.as_ref().encode();
        prop_assert_eq!(EventRef::decode(&frame).unwrap().to_owned_event(), e);
        let mut w = BatchWriter::new();
        w.push_frame(&frame);
        prop_assert_eq!(batch_frames(&w.finish()).unwrap().count(), 1);
    }

    #[test]
    fn manifests_never_panic(text in ".{0,200}") {
        let _ = Manifest::parse_str(&text, "m.toml".as_ref());
    }

    #[test]
    fn mutated_manifests_never_panic(pos in 0usize..MANIFEST.len(), cut in 0usize..40, insert in ".{0,8}") {
        let mut s = MANIFEST.to_string();
        let pos = (0..=pos).rev().find(|p| s.is_char_boundary(*p)).unwrap_or(0);
        let end = (pos + cut).min(s.len());
        let end = (end..=s.len()).find(|p| s.is_char_boundary(*p)).unwrap_or(s.len());
        s.replace_range(pos..end, &insert);
        if let Err(e) = Manifest::parse_str(&s, "m.toml".as_ref()) {
            prop_assert!(e.contains("m.toml"), "errors name the file: {}", e);
        }
    }
}

#[test]
fn the_base_manifest_is_valid() {
    Manifest::parse_str(MANIFEST, "m.toml".as_ref()).unwrap();
}

//! The CloudEvents Kafka protocol binding: reading both modes (binary:
//! `ce_*` headers, value = data; structured: `content-type:
//! application/cloudevents+json`, value = the event as JSON) and writing
//! binary mode. The Kafka source decodes with it, the Kafka sink encodes.
//!
//! A record without an id gets `<topic>/<partition>/<offset>`, so a
//! redelivery of it is recognised as the same event.

use sluice_wire::OwnedEvent;

/// Decode one Kafka record with the CloudEvents Kafka binding.
pub fn decode(
    topic: &str,
    partition: u32,
    offset: u64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(String, Option<Vec<u8>>)],
    timestamp_ms: Option<i64>,
) -> Result<OwnedEvent, String> {
    let value = value.unwrap_or_default();
    let text = |name: &str, v: &Option<Vec<u8>>| -> Result<String, String> {
        let v = v.as_deref().unwrap_or_default();
        std::str::from_utf8(v)
            .map(str::to_owned)
            .map_err(|_| format!("header `{name}` is not UTF-8"))
    };
    let content_type = match headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
    {
        Some((n, v)) => Some(text(n, v)?),
        None => None,
    };
    let structured = content_type
        .as_deref()
        .is_some_and(|c| c.trim_start().starts_with("application/cloudevents"));
    let mut ev = if structured {
        let v: serde_json::Value = serde_json::from_slice(value)
            .map_err(|e| format!("structured-mode record is not JSON: {e}"))?;
        super::ingest::structured(v).map_err(|e| e.to_string())?
    } else {
        let mut ce = Vec::new();
        for (n, v) in headers {
            if let Some(attr) = n.strip_prefix("ce_") {
                ce.push((format!("ce-{attr}"), text(n, v)?));
            }
        }
        if ce.is_empty() {
            return Err(
                "not a CloudEvent: no ce_* headers and no content-type application/cloudevents+json"
                    .into(),
            );
        }
        if !ce.iter().any(|(n, _)| n == "ce-source") {
            return Err("required header `ce_source` is missing".into());
        }
        super::ingest::binary(&ce, content_type.as_deref(), value)
            .map_err(|e| e.to_string().replace("ce-", "ce_"))?
    };
    for (n, v) in headers {
        if n.starts_with("ce_") || n.eq_ignore_ascii_case("content-type") {
            continue;
        }
        if ev.headers.iter().any(|(h, _)| h == n) {
            continue;
        }
        ev.headers.push((n.clone(), v.clone().unwrap_or_default()));
    }
    if let Some(k) = key {
        ev.key = Some(k.to_vec());
    }
    if ev.id.is_empty() {
        ev.id = format!("{topic}/{partition}/{offset}");
    }
    super::ingest::fill_source(&mut ev, topic);
    super::ingest::check_attributes(&ev).map_err(|e| e.to_string())?;
    if ev.time.is_none()
        && let Some(ms) = timestamp_ms
    {
        ev.time = Some(super::rfc3339_of_ms(ms));
    }
    ev.topic = topic.into();
    ev.partition = partition;
    ev.offset = offset;
    Ok(ev)
}

/// A Kafka record's parts: key, value, headers.
pub type KafkaRecord = (Option<Vec<u8>>, Vec<u8>, Vec<(String, Vec<u8>)>);

/// The Kafka record for an event, CloudEvents binary mode.
pub fn encode(ev: &sluice_wire::EventRef<'_>) -> KafkaRecord {
    let mut h: Vec<(String, Vec<u8>)> = vec![
        ("ce_specversion".into(), b"1.0".to_vec()),
        ("ce_id".into(), ev.id.as_bytes().to_vec()),
        ("ce_source".into(), ev.source.as_bytes().to_vec()),
        ("ce_type".into(), ev.ty.as_bytes().to_vec()),
    ];
    for (n, v) in [
        ("ce_subject", ev.subject),
        ("ce_time", ev.time),
        ("ce_dataschema", ev.dataschema),
        ("content-type", ev.datacontenttype),
    ] {
        if let Some(v) = v {
            h.push((n.into(), v.as_bytes().to_vec()));
        }
    }
    for (n, v) in ev.headers.iter() {
        h.push((n.to_string(), v.to_vec()));
    }
    (ev.key.map(<[u8]>::to_vec), ev.data.to_vec(), h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &[u8])]) -> Vec<(String, Option<Vec<u8>>)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), Some(v.to_vec())))
            .collect()
    }

    #[test]
    fn binary_mode_round_trips_and_fills_a_missing_id() {
        let ev = OwnedEvent {
            id: "e1".into(),
            source: "/s".into(),
            ty: "order.created".into(),
            time: Some("2026-01-01T00:00:00Z".into()),
            datacontenttype: Some("application/json".into()),
            key: Some(b"k".to_vec()),
            data: br#"{"a":1}"#.to_vec(),
            headers: vec![("traceparent".into(), b"00-abc-01".to_vec())],
            ..Default::default()
        };
        let (key, value, headers) = encode(&ev.as_ref());
        let headers: Vec<_> = headers.into_iter().map(|(n, v)| (n, Some(v))).collect();
        let back = decode("t", 2, 9, key.as_deref(), Some(&value), &headers, None).unwrap();
        assert_eq!(back.id, "e1");
        assert_eq!(back.ty, "order.created");
        assert_eq!(back.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(back.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(back.headers, ev.headers);
        assert_eq!(
            (back.topic.as_str(), back.partition, back.offset),
            ("t", 2, 9)
        );

        let no_id = h(&[
            ("ce_source", b"/s"),
            ("ce_type", b"t"),
            ("ce_specversion", b"1.0"),
        ]);
        let e = decode("t", 1, 5, None, Some(b"x"), &no_id, Some(0)).unwrap();
        assert_eq!(e.id, "t/1/5");
        assert_eq!(e.time.as_deref(), Some("1970-01-01T00:00:00Z"));
    }

    #[test]
    fn structured_mode_decodes() {
        let body = br#"{"specversion":"1.0","id":"s1","source":"/x","type":"t","data":{"n":1}}"#;
        let e = decode(
            "t",
            0,
            0,
            Some(b"key"),
            Some(body),
            &h(&[(
                "content-type",
                b"application/cloudevents+json; charset=utf-8",
            )]),
            None,
        )
        .unwrap();
        assert_eq!((e.id.as_str(), e.ty.as_str()), ("s1", "t"));
        assert_eq!(e.key.as_deref(), Some(&b"key"[..]));
    }

    #[test]
    fn malformed_records_are_refused_with_the_reason() {
        let ct = &[("content-type", &b"application/cloudevents+json"[..])];
        let bad_json = decode("t", 0, 0, None, Some(b"{nope"), &h(ct), None).unwrap_err();
        assert!(bad_json.contains("not JSON"), "{bad_json}");
        let no_type = decode(
            "t",
            0,
            0,
            None,
            Some(br#"{"id":"x","source":"/s"}"#),
            &h(ct),
            None,
        )
        .unwrap_err();
        assert!(no_type.contains("type"), "{no_type}");
        let missing = decode(
            "t",
            0,
            0,
            None,
            Some(b"x"),
            &h(&[("ce_id", b"1"), ("ce_type", b"t")]),
            None,
        )
        .unwrap_err();
        assert!(missing.contains("ce_source"), "{missing}");
        let not_utf8 = decode(
            "t",
            0,
            0,
            None,
            Some(b"x"),
            &h(&[("ce_source", b"/s"), ("ce_type", &[0xff, 0xfe])]),
            None,
        )
        .unwrap_err();
        assert!(
            not_utf8.contains("ce_type") && not_utf8.contains("UTF-8"),
            "{not_utf8}"
        );
        let plain = decode("t", 0, 0, None, Some(b"hello"), &[], None).unwrap_err();
        assert!(plain.contains("not a CloudEvent"), "{plain}");
    }
}

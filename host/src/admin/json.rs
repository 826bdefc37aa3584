//! How events and state values are shown as JSON by the API and the CLI.

use base64::Engine as _;
use serde_json::{Value, json};
use sluice_wire::EventRef;

/// A value as JSON if it parses, else as a UTF-8 string, else base64 in an object.
pub fn bytes_value(b: &[u8]) -> Value {
    if let Ok(v) = serde_json::from_slice::<Value>(b) {
        return v;
    }
    match std::str::from_utf8(b) {
        Ok(s) => Value::String(s.into()),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
    }
}

/// A stored event frame as a CloudEvents-style JSON object (plus `topic`,
/// `partition`, `offset` and `headers`).
pub fn event_json(frame: &[u8]) -> Result<Value, sluice_wire::DecodeError> {
    let e = EventRef::decode(frame)?;
    let mut v = json!({
        "specversion": "1.0",
        "id": e.id,
        "source": e.source,
        "type": e.ty,
        "topic": e.topic,
        "partition": e.partition,
        "offset": e.offset,
    });
    let o = v.as_object_mut().expect("object literal");
    for (k, val) in [
        ("subject", e.subject),
        ("time", e.time),
        ("datacontenttype", e.datacontenttype),
        ("dataschema", e.dataschema),
    ] {
        if let Some(val) = val {
            o.insert(k.into(), json!(val));
        }
    }
    if let Some(k) = e.key {
        o.insert("partitionkey".into(), json!(String::from_utf8_lossy(k)));
    }
    let is_json = e.datacontenttype.is_none_or(|ct| ct.contains("json"));
    match (
        is_json,
        serde_json::from_slice::<Value>(e.data),
        std::str::from_utf8(e.data),
    ) {
        (true, Ok(d), _) => o.insert("data".into(), d),
        (_, _, Ok(s)) if !s.is_empty() => o.insert("data".into(), json!(s)),
        (_, _, Ok(_)) => None,
        _ => o.insert(
            "data_base64".into(),
            json!(base64::engine::general_purpose::STANDARD.encode(e.data)),
        ),
    };
    if !e.headers.is_empty() {
        let h: serde_json::Map<String, Value> = e
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), json!(String::from_utf8_lossy(v))))
            .collect();
        o.insert("headers".into(), Value::Object(h));
    }
    Ok(v)
}

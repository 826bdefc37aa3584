//! Turning what a producer sends into events: the CloudEvents JSON format
//! (structured mode, one event or an array/batch) and the CloudEvents HTTP
//! binary mode (`ce-*` headers, body = data).
//!
//! ```
//! let evs = sluice::source::ingest::parse_json(br#"
//!   {"specversion":"1.0","id":"o-1","source":"/shop","type":"order.created",
//!    "partitionkey":"c1","data":{"amount":5}}"#).unwrap();
//! assert_eq!(evs[0].key.as_deref(), Some(&b"c1"[..]));
//! assert_eq!(evs[0].data, br#"{"amount":5}"#);
//! ```

use base64::Engine as _;
use serde_json::{Map, Value};
use sluice_wire::OwnedEvent;
use std::fmt;

/// The `source` an event sent to `topic` without one gets: unique per
/// topic, so that events posted without a source to two topics are never
/// taken for one another (the idempotency key is `source` + `id`).
pub fn default_source(topic: &str) -> String {
    format!("/sluice/topics/{topic}")
}

/// Give `ev`, read from or posted to `topic`, its default source if it came
/// without one.
pub fn fill_source(ev: &mut OwnedEvent, topic: &str) {
    if ev.source.is_empty() {
        ev.source = default_source(topic);
    }
}

/// Why a produced event was refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IngestError {
    /// Index in the batch, when the body was an array.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// The attribute that was wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What was wrong.
    pub message: String,
}

impl fmt::Display for IngestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(i) = self.index {
            write!(f, "event [{i}]: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "`{field}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for IngestError {}

fn err(field: &str, message: impl Into<String>) -> IngestError {
    IngestError {
        index: None,
        field: Some(field.into()),
        message: message.into(),
    }
}

/// Longest `id`, `source`, `type`, `subject`, `dataschema`,
/// `datacontenttype` or partition key an event may carry.
pub const MAX_ATTRIBUTE: usize = 1024;
/// Longest value of an extension attribute or transport header.
pub const MAX_EXTENSION: usize = 4096;
/// Most extension attributes and headers on one event.
pub const MAX_EXTENSIONS: usize = 64;

/// Refuse an event whose attributes are out of bounds, naming the first one.
/// (They are quoted in outputs, dead letters, logs and status: a megabyte of
/// `id` would be copied everywhere.)
pub fn check_attributes(ev: &OwnedEvent) -> Result<(), IngestError> {
    let fixed = [
        ("id", Some(ev.id.len())),
        ("source", Some(ev.source.len())),
        ("type", Some(ev.ty.len())),
        ("subject", ev.subject.as_ref().map(String::len)),
        ("dataschema", ev.dataschema.as_ref().map(String::len)),
        (
            "datacontenttype",
            ev.datacontenttype.as_ref().map(String::len),
        ),
        ("partitionkey", ev.key.as_ref().map(Vec::len)),
    ];
    for (name, len) in fixed {
        if let Some(n) = len
            && n > MAX_ATTRIBUTE
        {
            return Err(err(
                name,
                format!("{n} bytes long; at most {MAX_ATTRIBUTE}"),
            ));
        }
    }
    if ev.headers.len() > MAX_EXTENSIONS {
        return Err(IngestError {
            index: None,
            field: None,
            message: format!(
                "{} extension attributes and headers; at most {MAX_EXTENSIONS}",
                ev.headers.len()
            ),
        });
    }
    for (name, value) in &ev.headers {
        if name.len() > MAX_ATTRIBUTE || value.len() > MAX_EXTENSION {
            return Err(err(
                &crate::util::clip(name, 64),
                format!(
                    "{} bytes long; at most {MAX_EXTENSION}",
                    name.len() + value.len()
                ),
            ));
        }
    }
    Ok(())
}

/// Parse a JSON body: one structured CloudEvent or an array of them.
pub fn parse_json(body: &[u8]) -> Result<Vec<OwnedEvent>, IngestError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| IngestError {
        index: None,
        field: None,
        message: format!("body is not valid JSON: {e}"),
    })?;
    match v {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(IngestError {
                    index: None,
                    field: None,
                    message: "empty batch".into(),
                });
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    structured(item).map_err(|mut e| {
                        e.index = Some(i);
                        e
                    })
                })
                .collect()
        }
        other => Ok(vec![structured(other)?]),
    }
}

fn opt_string(obj: &mut Map<String, Value>, field: &str) -> Result<Option<String>, IngestError> {
    match obj.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(err(
            field,
            format!("must be a string, got {}", kind(&other)),
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn is_json_type(ct: &str) -> bool {
    let ct = ct.split(';').next().unwrap_or("").trim();
    ct == "application/json" || ct == "text/json" || ct.ends_with("+json")
}

/// One structured-mode CloudEvent (a JSON object).
pub fn structured(v: Value) -> Result<OwnedEvent, IngestError> {
    let Value::Object(mut obj) = v else {
        return Err(IngestError {
            index: None,
            field: None,
            message: format!("an event must be a JSON object, got {}", kind(&v)),
        });
    };
    if let Some(sv) = opt_string(&mut obj, "specversion")?
        && sv != "1.0"
    {
        return Err(err(
            "specversion",
            format!("unsupported CloudEvents version `{sv}` (only 1.0)"),
        ));
    }
    let ty = opt_string(&mut obj, "type")?
        .ok_or_else(|| err("type", "required attribute is missing"))?;
    if ty.is_empty() {
        return Err(err("type", "must not be empty"));
    }
    let id = opt_string(&mut obj, "id")?.unwrap_or_default();
    // A missing source is filled per topic by the caller (`fill_source`).
    let source = match opt_string(&mut obj, "source")? {
        Some(s) if s.is_empty() => return Err(err("source", "must not be empty")),
        Some(s) => s,
        None => String::new(),
    };
    let subject = opt_string(&mut obj, "subject")?;
    let time = opt_string(&mut obj, "time")?;
    if let Some(t) = &time
        && super::parse_rfc3339_ms(t).is_none()
    {
        return Err(err("time", format!("`{t}` is not an RFC 3339 timestamp")));
    }
    let mut datacontenttype = opt_string(&mut obj, "datacontenttype")?;
    let dataschema = opt_string(&mut obj, "dataschema")?;
    let key = match (
        opt_string(&mut obj, "partitionkey")?,
        opt_string(&mut obj, "key")?,
    ) {
        (Some(k), _) | (None, Some(k)) => Some(k.into_bytes()),
        (None, None) => None,
    };
    let data = match (obj.remove("data"), obj.remove("data_base64")) {
        (Some(_), Some(_)) => {
            return Err(err(
                "data",
                "only one of `data` and `data_base64` may be set",
            ));
        }
        (None, Some(Value::String(b64))) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| err("data_base64", format!("not valid base64: {e}")))?,
        (None, Some(other)) => {
            return Err(err(
                "data_base64",
                format!("must be a string, got {}", kind(&other)),
            ));
        }
        (None, None) | (Some(Value::Null), None) => Vec::new(),
        (Some(Value::String(s)), None)
            if datacontenttype
                .as_deref()
                .is_some_and(|ct| !is_json_type(ct)) =>
        {
            s.into_bytes()
        }
        (Some(v), None) => {
            if datacontenttype.is_none() {
                datacontenttype = Some("application/json".into());
            }
            serde_json::to_vec(&v).map_err(|e| err("data", e.to_string()))?
        }
    };
    let mut headers = Vec::new();
    for (name, v) in obj {
        if !valid_extension_name(&name) {
            return Err(err(
                &name,
                "not a CloudEvents attribute name (lower-case letters and digits, at most 20)",
            ));
        }
        let s = match v {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(err(
                    &name,
                    format!(
                        "extension attributes must be strings, numbers or booleans, got {}",
                        kind(&other)
                    ),
                ));
            }
        };
        headers.push((name, s.into_bytes()));
    }
    let ev = OwnedEvent {
        id,
        source,
        ty,
        subject,
        time,
        datacontenttype,
        dataschema,
        key,
        data,
        headers,
        ..Default::default()
    };
    check_attributes(&ev)?;
    Ok(ev)
}

fn valid_extension_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 20
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// One binary-mode event: attributes from `ce-*` HTTP headers, body = data.
/// `headers` are `(lower-case name, value)` pairs.
pub fn binary(
    headers: &[(String, String)],
    content_type: Option<&str>,
    body: &[u8],
) -> Result<OwnedEvent, IngestError> {
    let mut ev = OwnedEvent {
        data: body.to_vec(),
        datacontenttype: content_type.map(str::to_owned),
        ..Default::default()
    };
    let mut have_type = false;
    for (name, value) in headers {
        let Some(attr) = name.strip_prefix("ce-") else {
            continue;
        };
        match attr {
            "specversion" => {
                if value != "1.0" {
                    return Err(err(
                        "ce-specversion",
                        format!("unsupported CloudEvents version `{value}`"),
                    ));
                }
            }
            "id" => ev.id = value.clone(),
            "source" if value.is_empty() => {
                return Err(err("ce-source", "must not be empty"));
            }
            "source" => ev.source = value.clone(),
            "type" => {
                ev.ty = value.clone();
                have_type = !value.is_empty();
            }
            "subject" => ev.subject = Some(value.clone()),
            "time" => {
                if super::parse_rfc3339_ms(value).is_none() {
                    return Err(err(
                        "ce-time",
                        format!("`{value}` is not an RFC 3339 timestamp"),
                    ));
                }
                ev.time = Some(value.clone())
            }
            "dataschema" => ev.dataschema = Some(value.clone()),
            "partitionkey" => ev.key = Some(value.clone().into_bytes()),
            other => ev
                .headers
                .push((other.to_string(), value.clone().into_bytes())),
        }
    }
    if let Some(tp) = headers.iter().find(|(n, _)| n == "traceparent") {
        ev.headers
            .push(("traceparent".into(), tp.1.clone().into_bytes()));
    }
    if !have_type {
        return Err(err("ce-type", "required header is missing"));
    }
    check_attributes(&ev).map_err(|mut e| {
        e.field = e.field.map(|f| format!("ce-{f}"));
        e
    })?;
    Ok(ev)
}

/// The headers of a binary-mode HTTP request as `(lower-case name, value)`
/// for [`binary`]: `ce-*` values percent-decoded as the CloudEvents HTTP
/// binding says, then read as UTF-8 (a value sent raw in UTF-8 is taken as
/// it is). A `ce-*`, `content-type` or `traceparent` value that is not UTF-8
/// after decoding is refused, naming the header; no attribute is dropped.
pub fn http_headers<'a>(
    raw: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Result<Vec<(String, String)>, IngestError> {
    let mut out = Vec::new();
    for (name, value) in raw {
        let name = name.to_ascii_lowercase();
        let attribute = name.starts_with("ce-");
        if !attribute && name != "content-type" && name != "traceparent" {
            continue;
        }
        let bytes = if attribute {
            percent_decode(value)
        } else {
            value.to_vec()
        };
        let text = String::from_utf8(bytes).map_err(|_| {
            err(
                &name,
                "not UTF-8 (percent-encode non-ASCII characters, as the CloudEvents HTTP binding says)",
            )
        })?;
        out.push((name, text));
    }
    Ok(out)
}

/// `%XX` sequences replaced by their byte; anything else kept as it is.
fn percent_decode(v: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%'
            && let (Some(h), Some(l)) = (
                v.get(i + 1).copied().and_then(hex),
                v.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(v[i]);
        i += 1;
    }
    out
}

/// The key `pointer` (a JSON pointer into `data`) names, for an event that
/// has no key of its own: a string as it is, a number or boolean as text.
pub fn derive_key(ev: &mut OwnedEvent, pointer: &str) -> Result<(), IngestError> {
    if ev.key.is_some() {
        return Ok(());
    }
    let data: Value = serde_json::from_slice(&ev.data).map_err(|_| {
        err(
            "data",
            format!(
                "this topic takes its partition key from `{pointer}` in `data`, which is not JSON"
            ),
        )
    })?;
    let key = match data.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
        Some(other) => {
            return Err(err(
                "data",
                format!(
                    "this topic takes its partition key from `{pointer}` in `data`, which is {}",
                    kind(other)
                ),
            ));
        }
        None => {
            return Err(err(
                "data",
                format!(
                    "this topic takes its partition key from `{pointer}` in `data`, which this event lacks (or give it a `partitionkey`)"
                ),
            ));
        }
    };
    ev.key = Some(key.into_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_event_with_extensions_and_base64() {
        let e = parse_json(br#"{"type":"t","data_base64":"AAE=","traceparent":"00-x","seq":3}"#)
            .unwrap();
        assert_eq!(e[0].data, [0, 1]);
        assert_eq!(e[0].source, "", "filled per topic by the caller");
        assert_eq!(e[0].headers.len(), 2);
    }

    #[test]
    fn text_data_with_text_content_type_is_raw() {
        let e = parse_json(br#"{"type":"t","datacontenttype":"text/plain","data":"hi"}"#).unwrap();
        assert_eq!(e[0].data, b"hi");
    }

    #[test]
    fn errors_name_the_field_and_index() {
        let e = parse_json(br#"[{"type":"t"},{"id":"x"}]"#).unwrap_err();
        assert_eq!(e.index, Some(1));
        assert_eq!(e.field.as_deref(), Some("type"));
        assert!(e.to_string().contains("event [1]: `type`"), "{e}");
        let e = parse_json(br#"{"type":"t","time":"yesterday"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("time"));
        let e = parse_json(b"{not json").unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{e}");
        let e = parse_json(br#"{"type":"t","specversion":"0.3"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("specversion"));
        let e = parse_json(br#"{"type":"t","Bad-Name":"x"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("Bad-Name"));
    }

    #[test]
    fn http_headers_are_percent_decoded_and_refused_when_not_utf8() {
        let h = http_headers([
            ("CE-Source", &b"/m%C3%BCnchen"[..]),
            ("ce-id", "caf\u{e9}".as_bytes()),
            ("ce-subject", b"100%25 %zz"),
            ("accept", b"\xff"),
            ("traceparent", b"00-a-b-01"),
        ])
        .unwrap();
        assert_eq!(
            h,
            [
                ("ce-source".to_string(), "/m\u{fc}nchen".to_string()),
                ("ce-id".to_string(), "caf\u{e9}".to_string()),
                ("ce-subject".to_string(), "100% %zz".to_string()),
                ("traceparent".to_string(), "00-a-b-01".to_string()),
            ]
        );
        let e = http_headers([("ce-id", &b"%FF"[..])]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("ce-id"));
    }

    #[test]
    fn keys_come_from_the_pointer_unless_given() {
        let mut ev = parse_json(br#"{"type":"t","data":{"c":{"id":7}}}"#)
            .unwrap()
            .remove(0);
        derive_key(&mut ev, "/c/id").unwrap();
        assert_eq!(ev.key.as_deref(), Some(&b"7"[..]));
        let mut keyed = parse_json(br#"{"type":"t","partitionkey":"k","data":{}}"#)
            .unwrap()
            .remove(0);
        derive_key(&mut keyed, "/c").unwrap();
        assert_eq!(keyed.key.as_deref(), Some(&b"k"[..]));
        let mut missing = parse_json(br#"{"type":"t","data":{}}"#).unwrap().remove(0);
        let e = derive_key(&mut missing, "/c").unwrap_err();
        assert!(e.message.contains("`/c`"), "{e}");
    }

    #[test]
    fn attributes_are_bounded_and_named() {
        let long = "x".repeat(MAX_ATTRIBUTE + 1);
        let e = parse_json(format!(r#"{{"type":"t","id":"{long}"}}"#).as_bytes()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("id"));
        assert!(e.message.contains("at most 1024"), "{e}");
        let e = binary(
            &[
                ("ce-type".into(), "t".into()),
                ("ce-subject".into(), long.clone()),
            ],
            None,
            b"",
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("ce-subject"));
        let big = "y".repeat(MAX_EXTENSION + 1);
        let e = parse_json(format!(r#"{{"type":"t","ext":"{big}"}}"#).as_bytes()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("ext"));
    }

    #[test]
    fn binary_mode() {
        let h = vec![
            ("ce-type".to_string(), "t".to_string()),
            ("ce-id".to_string(), "1".to_string()),
            ("ce-partitionkey".to_string(), "k".to_string()),
        ];
        let e = binary(&h, Some("text/plain"), b"body").unwrap();
        assert_eq!((e.id.as_str(), e.key.as_deref()), ("1", Some(&b"k"[..])));
        assert!(
            binary(&[], None, b"")
                .unwrap_err()
                .to_string()
                .contains("ce-type")
        );
    }
}

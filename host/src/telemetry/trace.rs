//! OpenTelemetry spans, one per event per module, following the messaging
//! semantic conventions, exported over OTLP/HTTP (protobuf) in batches from
//! a background thread.
//!
//! A span is a child of the event's `traceparent` (W3C trace context); what
//! the module emits and the dead letter it may cause carry the span's own
//! `traceparent`, so one trace joins producer, broker, module and the
//! modules downstream. HTTP ingest starts a producer span per event the
//! same way. Spans are made with the OpenTelemetry API itself rather than
//! through `tracing` (ADR 0008): a batch's spans are started before one
//! shared call into the module and ended after its commit.
//!
//! Sampling is parent-based: an input's `traceparent` decides for its
//! trace; where there is none, `[telemetry] sampling` does. The decision
//! is made first, from the `traceparent`'s flags or one random draw: an
//! event that is not sampled gets no span at all and passes its own
//! `traceparent` (if any) through to what it leads to, unchanged, as a
//! participant that does not record should. (A root that is not sampled so
//! carries nothing, and a module downstream decides again.)

use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};

use crate::config::host::TelemetryConfig;

/// Makes the spans of one host, or nothing when tracing is off.
pub struct Tracer {
    inner: Option<Inner>,
}

struct Inner {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
    /// Share of root traces sampled.
    ratio: f64,
}

/// Where an event was read, for its span's attributes.
pub struct Delivery<'a> {
    /// `kafka`, or `sluice` for the embedded log.
    pub system: &'a str,
    pub module: &'a str,
    /// The consumer group (`sluice.<module>` on Kafka).
    pub group: Option<&'a str>,
    pub topic: &'a str,
    pub partition: u32,
    pub offset: u64,
}

/// The CloudEvents attributes a span names.
pub struct EventIds<'a> {
    pub id: &'a str,
    pub source: &'a str,
    pub ty: &'a str,
}

/// One event's span. Its `traceparent` (and `tracestate`) go on whatever
/// the event leads to.
pub struct EventSpan {
    span: Option<opentelemetry_sdk::trace::Span>,
    headers: Vec<(String, Vec<u8>)>,
}

impl Tracer {
    /// As `[telemetry]` says: off without `otlp-endpoint`.
    pub fn new(config: &TelemetryConfig) -> anyhow::Result<Tracer> {
        let Some(endpoint) = &config.otlp_endpoint else {
            return Ok(Tracer::off());
        };
        if !(0.0..=1.0).contains(&config.sampling) {
            anyhow::bail!(
                "[telemetry] sampling: {} is not a share between 0.0 and 1.0",
                config.sampling
            );
        }
        let endpoint = endpoint.trim_end_matches('/');
        let endpoint = if endpoint.ends_with("/v1/traces") {
            endpoint.to_string()
        } else {
            format!("{endpoint}/v1/traces")
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(&endpoint)
            .with_timeout(Duration::from_secs(5))
            .build()
            .with_context(|| format!("[telemetry] otlp-endpoint: cannot export to `{endpoint}`"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            // Spans are only started once sampled (see `Inner::start`).
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("sluice");
        Ok(Tracer {
            inner: Some(Inner {
                provider,
                tracer,
                propagator: TraceContextPropagator::new(),
                ratio: config.sampling,
            }),
        })
    }

    /// A tracer that makes no spans.
    pub fn off() -> Tracer {
        Tracer { inner: None }
    }

    /// Whether spans are made.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The span of `module` processing one event with `headers` (its
    /// `traceparent` is the parent). `None` when tracing is off.
    pub fn process<'h>(
        &self,
        at: &Delivery<'_>,
        ev: &EventIds<'_>,
        headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
    ) -> Option<EventSpan> {
        let inner = self.inner.as_ref()?;
        let mut span = inner.start("process", SpanKind::Consumer, headers)?;
        span.update_name(format!("process {}", at.topic));
        let mut attributes = vec![
            KeyValue::new("messaging.system", at.system.to_string()),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.operation.name", "process"),
            KeyValue::new("messaging.destination.name", at.topic.to_string()),
            KeyValue::new(
                "messaging.destination.partition.id",
                at.partition.to_string(),
            ),
            KeyValue::new("messaging.message.id", ev.id.to_string()),
            KeyValue::new("cloudevents.event_id", ev.id.to_string()),
            KeyValue::new("cloudevents.event_source", ev.source.to_string()),
            KeyValue::new("cloudevents.event_type", ev.ty.to_string()),
            KeyValue::new("sluice.module", at.module.to_string()),
        ];
        if at.system == "kafka" {
            attributes.push(KeyValue::new("messaging.kafka.offset", at.offset as i64));
        } else {
            attributes.push(KeyValue::new("sluice.offset", at.offset as i64));
        }
        if let Some(group) = at.group {
            attributes.push(KeyValue::new(
                "messaging.consumer.group.name",
                group.to_string(),
            ));
        }
        span.set_attributes(attributes);
        Some(EventSpan::of(span))
    }

    /// The span of HTTP ingest sending one event to `topic` (`system` as
    /// in [`Delivery`]); `headers` are the event's (its own `traceparent`)
    /// or else the request's.
    pub fn send<'h>(
        &self,
        system: &str,
        topic: &str,
        ev: &EventIds<'_>,
        headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
    ) -> Option<EventSpan> {
        let inner = self.inner.as_ref()?;
        let mut span = inner.start("send", SpanKind::Producer, headers)?;
        span.update_name(format!("send {topic}"));
        span.set_attributes([
            KeyValue::new("messaging.system", system.to_string()),
            KeyValue::new("messaging.operation.type", "send"),
            KeyValue::new("messaging.operation.name", "send"),
            KeyValue::new("messaging.destination.name", topic.to_string()),
            KeyValue::new("messaging.message.id", ev.id.to_string()),
            KeyValue::new("cloudevents.event_id", ev.id.to_string()),
            KeyValue::new("cloudevents.event_source", ev.source.to_string()),
            KeyValue::new("cloudevents.event_type", ev.ty.to_string()),
        ]);
        Some(EventSpan::of(span))
    }

    /// Export what is buffered and stop the exporter.
    pub fn shutdown(&self) {
        if let Some(inner) = &self.inner
            && let Err(e) = inner.provider.shutdown_with_timeout(Duration::from_secs(5))
        {
            tracing::warn!(error = %e, "spans may be lost: the OTLP exporter did not shut down cleanly");
        }
    }
}

/// An event's `traceparent` and `tracestate`, found among its headers
/// without copying them.
#[derive(Default)]
struct Carrier<'h> {
    traceparent: Option<&'h str>,
    tracestate: Option<&'h str>,
}

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent,
            "tracestate" => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        [
            ("traceparent", self.traceparent),
            ("tracestate", self.tracestate),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|_| k))
        .collect()
    }
}

impl Inner {
    /// Start a span named `name` (renamed by the caller), the child of the
    /// `traceparent` among `headers`, if the trace is sampled: as the
    /// parent's flags say, or, for a root, with the configured share.
    fn start<'h>(
        &self,
        name: &'static str,
        kind: SpanKind,
        headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
    ) -> Option<opentelemetry_sdk::trace::Span> {
        let mut carrier = Carrier::default();
        for (n, v) in headers {
            if n.eq_ignore_ascii_case("traceparent") {
                carrier.traceparent = std::str::from_utf8(v).ok();
            } else if n.eq_ignore_ascii_case("tracestate") {
                carrier.tracestate = std::str::from_utf8(v).ok();
            }
        }
        let parent = match carrier.traceparent.and_then(sampled_flag) {
            Some(false) => return None,
            Some(true) => self.propagator.extract(&carrier),
            None if self.ratio >= 1.0 || rand::random::<f64>() < self.ratio => Context::new(),
            None => return None,
        };
        Some(
            self.tracer
                .span_builder(name)
                .with_kind(kind)
                .start_with_context(&self.tracer, &parent),
        )
    }
}

/// The sampled flag of a valid `traceparent` (`None`: not a valid one).
fn sampled_flag(traceparent: &str) -> Option<bool> {
    let b = traceparent.as_bytes();
    let valid = b.len() >= 55
        && b[2] == b'-'
        && b[35] == b'-'
        && b[52] == b'-'
        && ids(b).is_some_and(|(t, s)| {
            t.bytes().all(|c| c.is_ascii_hexdigit())
                && s.bytes().all(|c| c.is_ascii_hexdigit())
                && t.bytes().any(|c| c != b'0')
                && s.bytes().any(|c| c != b'0')
        });
    if !valid {
        return None;
    }
    let flags = u8::from_str_radix(traceparent.get(53..55)?, 16).ok()?;
    Some(flags & 1 == 1)
}

impl EventSpan {
    /// `span`, with the `traceparent` (and `tracestate`) that names it.
    fn of(span: opentelemetry_sdk::trace::Span) -> EventSpan {
        let cx = span.span_context();
        let mut headers = vec![(
            "traceparent".to_string(),
            format!(
                "00-{}-{}-{:02x}",
                cx.trace_id(),
                cx.span_id(),
                cx.trace_flags().to_u8()
            )
            .into_bytes(),
        )];
        let state = cx.trace_state().header();
        if !state.is_empty() {
            headers.push(("tracestate".to_string(), state.into_bytes()));
        }
        EventSpan {
            span: Some(span),
            headers,
        }
    }

    /// `traceparent` (and `tracestate`) naming this span as the parent.
    pub fn headers(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }

    /// `traceparent` of this span.
    pub fn traceparent(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == "traceparent")
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Put this span's `traceparent` (and `tracestate`) on `headers`, in
    /// place of any there.
    pub fn stamp(&self, headers: &mut Vec<(String, Vec<u8>)>) {
        headers.retain(|(n, _)| {
            !n.eq_ignore_ascii_case("traceparent") && !n.eq_ignore_ascii_case("tracestate")
        });
        headers.extend(self.headers.iter().cloned());
    }

    /// Add an attribute.
    pub fn set(&mut self, key: &'static str, value: impl Into<opentelemetry::Value>) {
        if let Some(s) = &mut self.span {
            s.set_attribute(KeyValue::new(key, value));
        }
    }

    /// The event failed for good (`class`: the dead letter's class).
    pub fn fail(&mut self, class: &str, message: &str) {
        if let Some(s) = &mut self.span {
            s.set_attribute(KeyValue::new("error.type", class.to_string()));
            s.set_status(Status::error(crate::util::clip(message, 500).to_string()));
        }
    }

    /// End the span now.
    pub fn end(mut self) {
        if let Some(mut s) = self.span.take() {
            s.end();
        }
    }
}

/// `(trace id, span id)` of a `traceparent` value, for log lines.
pub fn ids(traceparent: &[u8]) -> Option<(&str, &str)> {
    let s = std::str::from_utf8(traceparent).ok()?;
    let mut parts = s.split('-');
    let (_version, trace, span) = (parts.next()?, parts.next()?, parts.next()?);
    (trace.len() == 32 && span.len() == 16).then_some((trace, span))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_a_traceparent() {
        let tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            ids(tp),
            Some(("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"))
        );
        assert_eq!(ids(b"00-x"), None);
    }

    #[test]
    fn the_sampled_flag_comes_from_a_valid_traceparent_only() {
        let t = "4bf92f3577b34da6a3ce929d0e0e4736";
        let s = "00f067aa0ba902b7";
        assert_eq!(sampled_flag(&format!("00-{t}-{s}-01")), Some(true));
        assert_eq!(sampled_flag(&format!("00-{t}-{s}-00")), Some(false));
        assert_eq!(sampled_flag(&format!("00-{t}-{s}-03")), Some(true));
        assert_eq!(sampled_flag(&format!("00-{}-{s}-01", "0".repeat(32))), None);
        assert_eq!(sampled_flag(&format!("00-{t}-{}-01", "0".repeat(16))), None);
        assert_eq!(sampled_flag(&format!("00-{t}-{s}")), None);
        assert_eq!(sampled_flag("00-x"), None);
    }

    #[test]
    fn sampling_follows_the_parent_and_the_share_decides_roots() {
        let t = Tracer::new(&TelemetryConfig {
            otlp_endpoint: Some("http://127.0.0.1:9".into()),
            sampling: 0.0,
            ..TelemetryConfig::default()
        })
        .unwrap();
        let ids = EventIds {
            id: "1",
            source: "/s",
            ty: "t",
        };
        let parent =
            |flags: &str| format!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-{flags}");
        let sampled = parent("01");
        let unsampled = parent("00");
        let with = |tp: &str| {
            t.send("sluice", "t", &ids, [("traceparent", tp.as_bytes())])
                .map(EventSpan::end)
                .is_some()
        };
        assert!(with(&sampled), "a sampled parent is followed");
        assert!(!with(&unsampled), "so is an unsampled one");
        assert!(
            t.send("sluice", "t", &ids, []).is_none(),
            "a root is sampled at the configured share (0)"
        );
        t.shutdown();
    }

    #[test]
    fn a_sampling_share_out_of_range_is_named() {
        let config = TelemetryConfig {
            otlp_endpoint: Some("http://127.0.0.1:9".into()),
            sampling: 1.5,
            ..TelemetryConfig::default()
        };
        let e = Tracer::new(&config).err().unwrap().to_string();
        assert!(e.contains("[telemetry] sampling"), "{e}");
    }

    #[test]
    fn a_span_is_a_child_of_the_inputs_traceparent() {
        let config = TelemetryConfig {
            otlp_endpoint: Some("http://127.0.0.1:9".into()),
            ..TelemetryConfig::default()
        };
        let t = Tracer::new(&config).unwrap();
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let span = t
            .send(
                "sluice",
                "orders",
                &EventIds {
                    id: "1",
                    source: "/s",
                    ty: "t",
                },
                [("traceparent", parent.as_bytes())],
            )
            .unwrap();
        let tp = span.traceparent().unwrap().to_string();
        let (trace, id) = ids(tp.as_bytes()).unwrap();
        assert_eq!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(id, "00f067aa0ba902b7");
        assert!(tp.ends_with("-01"), "sampled like its parent: {tp}");
        span.end();
        t.shutdown();
    }
}

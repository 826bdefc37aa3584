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
//! trace; where there is none, `[telemetry] sampling` does. An unsampled
//! span costs an id and is never exported.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
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
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sampling,
            ))))
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
    pub fn process(
        &self,
        at: &Delivery<'_>,
        ev: &EventIds<'_>,
        headers: &[(&str, &[u8])],
    ) -> Option<EventSpan> {
        let inner = self.inner.as_ref()?;
        let parent = inner.extract(headers);
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
        let span = inner
            .tracer
            .span_builder(format!("process {}", at.topic))
            .with_kind(SpanKind::Consumer)
            .with_attributes(attributes)
            .start_with_context(&inner.tracer, &parent);
        Some(inner.span(span))
    }

    /// The span of HTTP ingest sending one event to `topic` (`system` as
    /// in [`Delivery`]); `headers` are the event's (its own `traceparent`)
    /// or else the request's.
    pub fn send(
        &self,
        system: &str,
        topic: &str,
        ev: &EventIds<'_>,
        headers: &[(&str, &[u8])],
    ) -> Option<EventSpan> {
        let inner = self.inner.as_ref()?;
        let parent = inner.extract(headers);
        let span = inner
            .tracer
            .span_builder(format!("send {topic}"))
            .with_kind(SpanKind::Producer)
            .with_attributes(vec![
                KeyValue::new("messaging.system", system.to_string()),
                KeyValue::new("messaging.operation.type", "send"),
                KeyValue::new("messaging.operation.name", "send"),
                KeyValue::new("messaging.destination.name", topic.to_string()),
                KeyValue::new("messaging.message.id", ev.id.to_string()),
                KeyValue::new("cloudevents.event_id", ev.id.to_string()),
                KeyValue::new("cloudevents.event_source", ev.source.to_string()),
                KeyValue::new("cloudevents.event_type", ev.ty.to_string()),
            ])
            .start_with_context(&inner.tracer, &parent);
        Some(inner.span(span))
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

impl Inner {
    fn extract(&self, headers: &[(&str, &[u8])]) -> Context {
        let carrier: HashMap<String, String> = headers
            .iter()
            .filter(|(n, _)| {
                n.eq_ignore_ascii_case("traceparent") || n.eq_ignore_ascii_case("tracestate")
            })
            .filter_map(|(n, v)| {
                Some((
                    n.to_ascii_lowercase(),
                    std::str::from_utf8(v).ok()?.to_string(),
                ))
            })
            .collect();
        self.propagator.extract(&carrier)
    }

    fn span(&self, span: opentelemetry_sdk::trace::Span) -> EventSpan {
        let cx = Context::new().with_remote_span_context(span.span_context().clone());
        let mut carrier: HashMap<String, String> = HashMap::new();
        self.propagator.inject_context(&cx, &mut carrier);
        let mut headers: Vec<(String, Vec<u8>)> = carrier
            .into_iter()
            .map(|(n, v)| (n, v.into_bytes()))
            .collect();
        headers.sort();
        EventSpan {
            span: Some(span),
            headers,
        }
    }
}

impl EventSpan {
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
                &[("traceparent", parent.as_bytes())],
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

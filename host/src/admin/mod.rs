//! The HTTP API: ingest, reading topics, module status and lifecycle.
//! `sluice produce`, `sluice tail`, `sluice modules`, `sluice deploy`, ... are
//! clients of it.
//!
//! | method and path | what |
//! |---|---|
//! | `POST /v1/topics/{topic}/events` | append: a CloudEvents JSON object or array, or binary mode (`ce-*` headers, body = data) |
//! | `GET /v1/topics` | topics with partitions and offsets |
//! | `GET /v1/topics/{topic}/partitions/{p}/events?from=&limit=&wait_ms=` | read (long-poll with `wait_ms`) |
//! | `GET /v1/modules` | modules: version, revision, status (running / paused / quarantined), cursor, lag, lag status and age of the oldest unprocessed event per partition, state size, counters, dead-letter depth, recent failures |
//! | `POST /v1/modules` | deploy or upgrade: `{"manifest": "<toml>", "component": "<base64>", "start": "..."}` |
//! | `GET /v1/modules/{name}` | one module, with its revision history and what its sandbox grants |
//! | `DELETE /v1/modules/{name}?purge=true` | undeploy (state kept unless `purge`) |
//! | `POST /v1/modules/{name}/rollback` | `{"to": "<version>"}` or `{}` for the previous revision |
//! | `POST /v1/modules/{name}/pause` | stop consuming (kept across restarts) |
//! | `POST /v1/modules/{name}/resume` | continue a paused or quarantined module |
//! | `POST /v1/modules/{name}/rewind` | `{"to": "earliest" / "latest" / time / offset, "reset_state": bool}` |
//! | `GET /v1/modules/{name}/state?prefix=&limit=` | a module's state entries |
//! | `GET /v1/modules/{name}/dlq` | dead letters: count, oldest, newest, count per failure class |
//! | `GET /v1/modules/{name}/dlq/events?id=&limit=` | the dead letters (optionally of one event id) |
//! | `POST /v1/modules/{name}/dlq/replay` | `{"ids": [...]}` or `{"all": true}`: replay through the module |
//! | `POST /v1/modules/{name}/dlq/purge` | delete the dead letters present now |
//! | `GET /v1/status` | outbox backlog, total lag, whether everything is processed (`idle`), wasm memory in use and the budget |
//! | `GET /metrics` | Prometheus text (see `docs/operations.md`); 404 with `[telemetry] metrics = false` |
//! | `/subjects`, `/schemas/ids/{id}`, `/compatibility/...`, `/config` | the Confluent Schema Registry API (see [`registry`]) |
//! | `GET /v1/schemas` | registered event types (owner, compatibility, versions with ids and schemas) and refused schema files |
//! | `GET /catalog` | the event catalog page: topics, event types with their versions, diffs and examples, modules (see [`crate::schema::catalog`]) |
//! | `GET /v1/catalog` | what the catalog is made of: types, modules, servers (`sluice catalog --host` reads it) |
//! | `GET /v1/catalog/asyncapi.json` | the catalog as an AsyncAPI 3.0 document |
//! | `GET /v1/history` | per module, one point a second for ten minutes: counters, lag, dead-letter depth |
//! | `GET /` | the dashboard page (reads the API; needs no token itself) |
//! | `GET /healthz` | process alive |
//! | `GET /readyz` | 200 once modules are loaded and sources reachable, else 503 with the reason |
//!
//! Every request that changes something (any method but GET) needs
//! `Authorization: Bearer <token>` (see [`auth`]), and so do reads when
//! `[api] read-token` is on (the default off loopback; `/healthz` and
//! `/readyz` never need it); bodies are capped at
//! `[api] max-upload` (413). Errors are JSON: `{"error": "...", "field":
//! "...", "index": n}`.

pub mod auth;
pub mod json;
mod lifecycle;
mod registry;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Service;
use crate::source::{TopicError, ingest};

/// The API's routes over a running service. Mutating requests need `token`
/// when one is given.
pub fn router(svc: Arc<Service>, token: Option<String>) -> Router {
    let max_body = usize::try_from(svc.config().api.max_upload).unwrap_or(usize::MAX);
    let reads_need_token = svc.config().api.reads_need_token();
    let mut r = Router::new()
        .route("/", get(dashboard))
        .route("/metrics", get(metrics))
        .route("/v1/history", get(history))
        .route("/v1/schemas", get(schemas))
        .route("/catalog", get(catalog_page))
        .route("/v1/catalog", get(catalog))
        .route("/v1/catalog/asyncapi.json", get(asyncapi))
        .route("/subjects", get(registry::subjects))
        .route("/subjects/{s}", post(registry::lookup))
        .route(
            "/subjects/{s}/versions",
            get(registry::versions).post(registry::register),
        )
        .route("/subjects/{s}/versions/{v}", get(registry::version))
        .route("/schemas/ids/{id}", get(registry::by_id))
        .route(
            "/compatibility/subjects/{s}/versions/{v}",
            post(registry::compatibility),
        )
        .route(
            "/config",
            get(registry::get_config).put(registry::put_config),
        )
        .route(
            "/config/{s}",
            get(registry::get_subject_config).put(registry::put_subject_config),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(lifecycle::readyz))
        .route("/v1/topics", get(topics))
        .route("/v1/topics/{topic}/events", post(produce))
        .route(
            "/v1/topics/{topic}/partitions/{partition}/events",
            get(read),
        )
        .route("/v1/status", get(status))
        .route("/v1/modules", get(modules).post(lifecycle::deploy))
        .route(
            "/v1/modules/{name}",
            get(lifecycle::detail).delete(lifecycle::undeploy),
        )
        .route("/v1/modules/{name}/state", get(state))
        .route("/v1/modules/{name}/rollback", post(lifecycle::rollback))
        .route("/v1/modules/{name}/pause", post(lifecycle::pause))
        .route("/v1/modules/{name}/resume", post(lifecycle::resume))
        .route("/v1/modules/{name}/rewind", post(lifecycle::rewind))
        .route("/v1/modules/{name}/dlq", get(dlq_summary))
        .route("/v1/modules/{name}/dlq/events", get(dlq_events))
        .route("/v1/modules/{name}/dlq/replay", post(dlq_replay))
        .route("/v1/modules/{name}/dlq/purge", post(dlq_purge))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(svc.clone());
    if let Some(t) = token {
        let guard = auth::Guard {
            token: t.into(),
            reads: reads_need_token,
        };
        r = r.layer(axum::middleware::from_fn_with_state(
            guard,
            auth::require_token,
        ));
    }
    r.layer(axum::middleware::map_response(auth::json_errors))
        .layer(axum::middleware::from_fn_with_state(svc, count_ingest))
}

/// Count every ingest request by the status it was answered with (refusals
/// by the token check and the body limit included).
async fn count_ingest(
    State(svc): State<Arc<Service>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let ingest = req.method() == axum::http::Method::POST
        && req.uri().path().starts_with("/v1/topics/")
        && req.uri().path().ends_with("/events");
    let response = next.run(req).await;
    if ingest {
        svc.telemetry().ingest_request(response.status().as_u16());
    }
    response
}

/// The dashboard: one page that reads the API.
async fn dashboard() -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("dashboard.html"),
    )
        .into_response()
}

/// Prometheus text (what the sampler set last; no lock, no store read).
async fn metrics(State(svc): State<Arc<Service>>) -> Response {
    match svc.telemetry().prom().render() {
        Some(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            json!({ "error": "metrics are off ([telemetry] metrics = false)" }),
        ),
    }
}

/// The registered event types with their versions, and what the schema
/// directory holds that was refused (by file, with the reason).
async fn schemas(State(svc): State<Arc<Service>>) -> Response {
    Json(svc.schemas().summary()).into_response()
}

/// The event catalog as a page.
async fn catalog_page(State(svc): State<Arc<Service>>) -> Response {
    let html = crate::schema::catalog::html::page(&svc.catalog(), "/v1/catalog/asyncapi.json");
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        html,
    )
        .into_response()
}

/// What the catalog is made of.
async fn catalog(State(svc): State<Arc<Service>>) -> Response {
    Json(svc.catalog()).into_response()
}

/// The catalog as AsyncAPI 3.0.
async fn asyncapi(State(svc): State<Arc<Service>>) -> Response {
    Json(crate::schema::catalog::asyncapi::document(&svc.catalog())).into_response()
}

/// Each module's counters and lag, one point a second, the last ten minutes.
async fn history(State(svc): State<Arc<Service>>) -> Response {
    Json(svc.telemetry().history()).into_response()
}

fn error(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// A failure of the host itself: 500 with the reason.
fn internal(e: impl std::fmt::Display) -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        json!({ "error": e.to_string() }),
    )
}

fn topic_error(e: TopicError) -> Response {
    let status = match &e {
        TopicError::Unknown(_) => StatusCode::NOT_FOUND,
        TopicError::BadName(_) | TopicError::Partitions { .. } | TopicError::NoPartition { .. } => {
            StatusCode::BAD_REQUEST
        }
        TopicError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        TopicError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
        TopicError::Conflict(_) => StatusCode::CONFLICT,
        TopicError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, json!({ "error": e.to_string() }))
}

/// Run `f` off the reactor (it blocks: RocksDB, a broker, a module's
/// batch) and answer with its result as JSON, or its error as `on_error`
/// says.
async fn blocking<T, E>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
    on_error: fn(E) -> Response,
) -> Response
where
    T: Serialize + Send + 'static,
    E: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => on_error(e),
        Err(e) => internal(e),
    }
}

/// What `POST /v1/topics/{topic}/events` answers.
#[derive(Serialize)]
struct Accepted {
    accepted: usize,
    events: Vec<crate::source::Produced>,
}

async fn produce(
    State(svc): State<Arc<Service>>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let binary = headers.contains_key("ce-type") || headers.contains_key("ce-id");
    let parsed = if binary {
        ingest::http_headers(headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()))).and_then(
            |hs| {
                let ct = hs
                    .iter()
                    .find(|(n, _)| n == "content-type")
                    .map(|(_, v)| v.as_str());
                ingest::binary(&hs, ct, &body).map(|e| vec![e])
            },
        )
    } else {
        ingest::parse_json(&body)
    };
    let key = svc
        .config()
        .topics
        .iter()
        .find(|t| t.name == topic)
        .and_then(|t| t.key.clone());
    let events = parsed.and_then(|mut events| {
        for (i, ev) in events.iter_mut().enumerate() {
            ingest::fill_source(ev, &topic);
            if let Some(pointer) = &key {
                ingest::derive_key(ev, pointer).map_err(|mut e| {
                    e.index = Some(i);
                    e
                })?;
            }
        }
        Ok(events)
    });
    let events = match events {
        Ok(e) => e,
        Err(e) => {
            let mut v = json!({ "error": e.to_string() });
            if let Some(f) = &e.field {
                v["field"] = json!(f);
            }
            if let Some(i) = e.index {
                v["index"] = json!(i);
            }
            return error(StatusCode::BAD_REQUEST, v);
        }
    };
    if let Some(refused) = invalid_at_ingest(&svc, &topic, &events) {
        return refused;
    }
    let mut events = events;
    let spans = send_spans(&svc, &topic, &headers, &mut events);
    blocking(
        move || {
            let events = svc.topics().produce(&topic, events)?;
            for (mut span, at) in spans.into_iter().zip(&events) {
                span.set(
                    "messaging.destination.partition.id",
                    at.partition.to_string(),
                );
                span.end();
            }
            svc.telemetry().ingest_events(&topic, events.len());
            Ok(Accepted {
                accepted: events.len(),
                events,
            })
        },
        topic_error,
    )
    .await
}

/// Where `topic`'s schema policy is `reject`: 400 for the first event that
/// fails its type's schema, naming it, the version and each failing pointer.
fn invalid_at_ingest(
    svc: &Service,
    topic: &str,
    events: &[sluice_wire::OwnedEvent],
) -> Option<Response> {
    use crate::schema::{Policy, Stage, Verdict};
    let schemas = svc.schemas();
    if schemas.policy(topic) != Policy::Reject {
        return None;
    }
    events.iter().enumerate().find_map(|(i, ev)| {
        let verdict = schemas.validate(Stage::Ingest, &ev.ty, ev.dataschema.as_deref(), &ev.data);
        let Verdict::Invalid {
            version,
            violations,
        } = verdict
        else {
            return None;
        };
        let first = violations
            .first()
            .map(|v| format!(" at `{}`: {}", v.pointer, v.message))
            .unwrap_or_default();
        let version = version.map(|v| format!(" version {v}")).unwrap_or_default();
        Some(error(
            StatusCode::BAD_REQUEST,
            json!({
                "error": format!("event {i} (id `{}`) does not match the schema of `{}`{version}{first}", ev.id, ev.ty),
                "field": "data",
                "index": i,
                "violations": violations,
            }),
        ))
    })
}

/// With tracing on, a producer span per event, the child of the event's own
/// `traceparent` or else the request's; the event then carries the span's.
fn send_spans(
    svc: &Service,
    topic: &str,
    request: &HeaderMap,
    events: &mut [sluice_wire::OwnedEvent],
) -> Vec<crate::telemetry::trace::EventSpan> {
    let tracer = svc.telemetry().tracer();
    if !tracer.enabled() {
        return Vec::new();
    }
    let system = svc.config().messaging_system();
    let from_request: Vec<(&str, &[u8])> = ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|n| Some((n, request.get(n)?.as_bytes())))
        .collect();
    events
        .iter_mut()
        .filter_map(|ev| {
            let has_own = ev
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("traceparent"));
            let ids = crate::telemetry::trace::EventIds {
                id: &ev.id,
                source: &ev.source,
                ty: &ev.ty,
            };
            let span = if has_own {
                let own = ev.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice()));
                tracer.send(system, topic, &ids, own)
            } else {
                tracer.send(system, topic, &ids, from_request.iter().copied())
            }?;
            span.stamp(&mut ev.headers);
            Some(span)
        })
        .collect()
}

async fn topics(State(svc): State<Arc<Service>>) -> Response {
    blocking(move || svc.topics().list(), topic_error).await
}

#[derive(Deserialize)]
struct ReadQuery {
    #[serde(default)]
    from: u64,
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    wait_ms: u64,
}

fn default_limit() -> usize {
    100
}

/// A page of a partition as the API shows it.
#[derive(Serialize)]
struct Events {
    events: Vec<Value>,
    /// The offset to read from next.
    next: u64,
    end: u64,
}

async fn read(
    State(svc): State<Arc<Service>>,
    Path((topic, partition)): Path<(String, u32)>,
    Query(q): Query<ReadQuery>,
) -> Response {
    let limit = q.limit.clamp(1, 10_000);
    let wait = Duration::from_millis(q.wait_ms.min(30_000));
    let read = move || {
        let topics = svc.topics();
        match topics.partitions(&topic)? {
            None => return Err(TopicError::Unknown(topic)),
            Some(have) if partition >= have => {
                return Err(TopicError::NoPartition {
                    topic,
                    partition,
                    have,
                });
            }
            Some(_) => {}
        }
        let page = topics.read(&topic, partition, q.from, limit, wait)?;
        let next = page.records.last().map(|r| r.offset + 1).unwrap_or(q.from);
        let events = page
            .records
            .iter()
            .filter_map(|r| match &r.invalid {
                None => json::event_json(&r.frame).ok(),
                Some(why) => Some(json!({ "offset": r.offset, "invalid": why })),
            })
            .collect();
        Ok(Events {
            events,
            next: next.max(page.first),
            end: page.end,
        })
    };
    blocking(read, |e| match e {
        // A partition that does not exist is not found, not a bad request.
        e @ TopicError::NoPartition { .. } => {
            error(StatusCode::NOT_FOUND, json!({ "error": e.to_string() }))
        }
        e => topic_error(e),
    })
    .await
}

async fn status(State(svc): State<Arc<Service>>) -> Response {
    blocking(move || Ok(svc.status()), |e: Infallible| match e {}).await
}

async fn modules(State(svc): State<Arc<Service>>) -> Response {
    blocking(move || Ok(svc.modules()), |e: Infallible| match e {}).await
}

/// Run `f` with the module's `(dlq topic, replay topic)` off the reactor.
async fn with_dlq<T, F>(svc: Arc<Service>, name: String, f: F) -> Response
where
    T: Serialize + Send + 'static,
    F: FnOnce(&Service, &str, &str) -> Result<T, TopicError> + Send + 'static,
{
    let (dlq_topic, replay_topic) = match svc.lifecycle().dlq_topics(&name) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::NOT_FOUND, json!({ "error": e })),
    };
    blocking(move || f(&svc, &dlq_topic, &replay_topic), topic_error).await
}

async fn dlq_summary(State(svc): State<Arc<Service>>, Path(name): Path<String>) -> Response {
    let module = name.clone();
    with_dlq(svc, name, move |svc, dlq_topic, _| {
        crate::dlq::summary(svc.topics(), &module, dlq_topic)
    })
    .await
}

#[derive(Deserialize)]
struct DlqQuery {
    id: Option<String>,
    #[serde(default = "default_dlq_limit")]
    limit: usize,
}

fn default_dlq_limit() -> usize {
    1000
}

async fn dlq_events(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
    Query(q): Query<DlqQuery>,
) -> Response {
    let module = name.clone();
    with_dlq(svc, name, move |svc, dlq_topic, _| {
        let ids: Vec<String> = q.id.into_iter().collect();
        let limit = q.limit.clamp(1, 10_000);
        let (total, frames) = crate::dlq::select(svc.topics(), &module, dlq_topic, &ids, limit)?;
        let events: Vec<Value> = frames
            .iter()
            .filter_map(|f| json::event_json(f).ok())
            .collect();
        Ok(json!({ "total": total, "events": events }))
    })
    .await
}

#[derive(Deserialize)]
struct ReplayRequest {
    #[serde(default)]
    ids: Vec<String>,
    #[serde(default)]
    all: bool,
}

async fn dlq_replay(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let req: ReplayRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                json!({ "error": format!("replay request: {e} (send {{\"ids\": [...]}} or {{\"all\": true}})") }),
            );
        }
    };
    if req.ids.is_empty() != req.all {
        return error(
            StatusCode::BAD_REQUEST,
            json!({ "error": "replay request: give either `ids` (non-empty) or `all: true`" }),
        );
    }
    let module = name.clone();
    with_dlq(svc, name, move |svc, dlq_topic, replay_topic| {
        crate::dlq::replay(svc.topics(), &module, dlq_topic, replay_topic, &req.ids)
    })
    .await
}

async fn dlq_purge(State(svc): State<Arc<Service>>, Path(name): Path<String>) -> Response {
    let module = name.clone();
    with_dlq(svc, name, move |svc, dlq_topic, _| {
        Ok(json!({ "purged": crate::dlq::purge(svc.topics(), &module, dlq_topic)? }))
    })
    .await
}

#[derive(Deserialize)]
struct StateQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default = "default_state_limit")]
    limit: usize,
}

fn default_state_limit() -> usize {
    1000
}

async fn state(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
    Query(q): Query<StateQuery>,
) -> Response {
    if !svc.lifecycle().has_module(&name) {
        return error(
            StatusCode::NOT_FOUND,
            json!({ "error": format!("no module named `{name}`") }),
        );
    }
    let limit = q.limit.clamp(1, 10_000);
    blocking(
        move || {
            let entries = svc.store().dump_state(&name, q.prefix.as_bytes(), limit)?;
            Ok::<Vec<Value>, crate::state::StoreError>(
                entries
                    .into_iter()
                    .map(|(p, (k, v))| json!({ "partition": p, "key": String::from_utf8_lossy(&k), "value": json::bytes_value(&v) }))
                    .collect(),
            )
        },
        internal,
    )
    .await
}

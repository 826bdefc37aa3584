//! The HTTP API: ingest, reading topics, module status and lifecycle.
//! `sluice produce`, `sluice tail`, `sluice modules`, `sluice deploy`, ... are
//! clients of it.
//!
//! | method and path | what |
//! |---|---|
//! | `POST /v1/topics/{topic}/events` | append: a CloudEvents JSON object or array, or binary mode (`ce-*` headers, body = data) |
//! | `GET /v1/topics` | topics with partitions and offsets |
//! | `GET /v1/topics/{topic}/partitions/{p}/events?from=&limit=&wait_ms=` | read (long-poll with `wait_ms`) |
//! | `GET /v1/modules` | modules: version, revision, status (running / paused / quarantined), cursor and lag per partition, state size, counters, last error |
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
//! | `GET /healthz` | process alive |
//! | `GET /readyz` | 200 once modules are loaded and sources reachable, else 503 with the reason |
//!
//! Every request that changes something (any method but GET) needs
//! `Authorization: Bearer <token>` (see [`auth`]); bodies are capped at
//! `[api] max-upload` (413). Errors are JSON: `{"error": "...", "field":
//! "...", "index": n}`.

pub mod auth;
pub mod json;
mod lifecycle;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Service;
use crate::source::{TopicError, ingest};

/// The API's routes over a running service. Mutating requests need `token`
/// when one is given.
pub fn router(svc: Arc<Service>, token: Option<String>) -> Router {
    let max_body = usize::try_from(svc.config.api.max_upload).unwrap_or(usize::MAX);
    let mut r = Router::new()
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
        .with_state(svc);
    if let Some(t) = token {
        let t: Arc<str> = t.into();
        r = r.layer(axum::middleware::from_fn_with_state(t, auth::require_token));
    }
    r.layer(axum::middleware::map_response(auth::json_errors))
}

fn error(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn topic_error(e: TopicError) -> Response {
    let status = match &e {
        TopicError::Unknown(_) => StatusCode::NOT_FOUND,
        TopicError::BadName(_) | TopicError::Partitions { .. } | TopicError::NoPartition { .. } => {
            StatusCode::BAD_REQUEST
        }
        TopicError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, json!({ "error": e.to_string() }))
}

async fn produce(
    State(svc): State<Arc<Service>>,
    Path(topic): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let binary = headers.contains_key("ce-type") || headers.contains_key("ce-id");
    let parsed = if binary {
        let hs: Vec<(String, String)> = headers
            .iter()
            .filter_map(|(n, v)| {
                Some((
                    n.as_str().to_ascii_lowercase(),
                    v.to_str().ok()?.to_string(),
                ))
            })
            .collect();
        let ct = headers.get("content-type").and_then(|v| v.to_str().ok());
        ingest::binary(&hs, ct, &body).map(|e| vec![e])
    } else {
        ingest::parse_json(&body)
    };
    let events = match parsed {
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
    if svc.kafka.is_some() {
        return produce_kafka(svc, topic, events).await;
    }
    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    let log = svc.log.clone();
    let t = topic.clone();
    let res = tokio::task::spawn_blocking(move || log.append(&t, events, |_| {})).await;
    match res {
        Ok(Ok(placed)) => {
            let events: Vec<Value> = placed
                .iter()
                .zip(ids)
                .map(|((p, o), id)| {
                    let id = if id.is_empty() {
                        format!("{topic}/{p}/{o}")
                    } else {
                        id
                    };
                    json!({ "id": id, "partition": p, "offset": o })
                })
                .collect();
            Json(json!({ "accepted": events.len(), "events": events })).into_response()
        }
        Ok(Err(e)) => topic_error(e),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "error": e.to_string() }),
        ),
    }
}

/// Ingest on Kafka: publish (binary mode) and answer once every record is
/// acknowledged. Events without an id get `<topic>/<partition>/<offset>` when read.
async fn produce_kafka(
    svc: Arc<Service>,
    topic: String,
    mut events: Vec<sluice_wire::OwnedEvent>,
) -> Response {
    for e in &mut events {
        e.topic.clone_from(&topic);
        if e.time.is_none() {
            e.time = Some(crate::source::now_rfc3339());
        }
    }
    let n = events.len();
    let res = tokio::task::spawn_blocking(move || match &svc.kafka_producer {
        Some(p) => p.publish(&events),
        None => Err("no Kafka producer".to_string()),
    })
    .await;
    match res {
        Ok(Ok(())) => Json(json!({ "accepted": n })).into_response(),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": e })),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "error": e.to_string() }),
        ),
    }
}

async fn topics(State(svc): State<Arc<Service>>) -> Response {
    if let Some(k) = svc.kafka.clone() {
        let res = tokio::task::spawn_blocking(move || -> Result<Vec<Value>, String> {
            let mut list = Vec::new();
            for (name, n) in k.topics()? {
                let parts: Vec<Value> = (0..n)
                    .map(|p| {
                        let (_, (first, end)) =
                            k.read(&name, p, 0, 0, Duration::ZERO).unwrap_or_default();
                        json!({ "partition": p, "first": first, "end": end })
                    })
                    .collect();
                list.push(json!({ "name": name, "partitions": parts }));
            }
            Ok(list)
        })
        .await;
        return match res {
            Ok(Ok(list)) => Json(list).into_response(),
            Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": e })),
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": e.to_string() }),
            ),
        };
    }
    let list: Vec<Value> = svc
        .log
        .topics()
        .into_iter()
        .map(|(name, n)| {
            let parts: Vec<Value> = (0..n)
                .map(|p| {
                    let (first, next) = svc.log.bounds(&name, p).unwrap_or((0, 0));
                    json!({ "partition": p, "first": first, "end": next })
                })
                .collect();
            json!({ "name": name, "partitions": parts })
        })
        .collect();
    Json(list).into_response()
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

async fn read(
    State(svc): State<Arc<Service>>,
    Path((topic, partition)): Path<(String, u32)>,
    Query(q): Query<ReadQuery>,
) -> Response {
    if let Some(k) = svc.kafka.clone() {
        let limit = q.limit.clamp(1, 10_000);
        let wait = Duration::from_millis(q.wait_ms.min(30_000));
        let res =
            tokio::task::spawn_blocking(move || k.read(&topic, partition, q.from, limit, wait))
                .await;
        return match res {
            Ok(Ok((records, (first, end)))) => {
                let next = records.last().map(|r| r.offset + 1).unwrap_or(q.from);
                let events: Vec<Value> = records
                    .iter()
                    .filter_map(|r| match &r.invalid {
                        None => json::event_json(&r.frame).ok(),
                        Some(why) => Some(json!({ "offset": r.offset, "invalid": why })),
                    })
                    .collect();
                Json(json!({ "events": events, "next": next.max(first), "end": end }))
                    .into_response()
            }
            Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, json!({ "error": e })),
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": e.to_string() }),
            ),
        };
    }
    let Some(n) = svc.log.partitions(&topic) else {
        return topic_error(TopicError::Unknown(topic));
    };
    if partition >= n {
        return error(
            StatusCode::NOT_FOUND,
            json!({ "error": format!("topic `{topic}` has {n} partitions; there is no partition {partition}") }),
        );
    }
    let limit = q.limit.clamp(1, 10_000);
    let mut rx = svc.log.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(q.wait_ms.min(30_000));
    loop {
        let records = match svc.log.read(&topic, partition, q.from, limit) {
            Ok(r) => r,
            Err(e) => return topic_error(e),
        };
        if !records.is_empty() || tokio::time::Instant::now() >= deadline {
            let next = records.last().map(|r| r.offset + 1).unwrap_or(q.from);
            let (first, end) = svc.log.bounds(&topic, partition).unwrap_or((0, 0));
            let events: Vec<Value> = records
                .iter()
                .filter_map(|r| json::event_json(&r.frame).ok())
                .collect();
            return Json(json!({ "events": events, "next": next.max(first), "end": end }))
                .into_response();
        }
        let _ = tokio::time::timeout_at(deadline, rx.changed()).await;
    }
}

async fn status(State(svc): State<Arc<Service>>) -> Response {
    let s = svc.clone();
    let res = tokio::task::spawn_blocking(move || {
        let outbox = s.store.outbox_len().unwrap_or(u64::MAX);
        let lag = s.lag();
        let budget = s.runtime.memory_budget();
        let (ready, _) = s.readiness();
        json!({
            "ready": ready,
            "outbox_pending": outbox,
            "outbox_at_start": s.outbox_at_start,
            "lag": lag,
            "idle": ready && outbox == 0 && lag == 0,
            "wasm_memory": { "used": budget.used(), "budget": s.config.pipeline.memory_budget },
            "kafka": s.kafka.as_ref().map(|k| k.health.report()),
        })
    })
    .await;
    match res {
        Ok(v) => Json(v).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "error": e.to_string() }),
        ),
    }
}

async fn modules(State(svc): State<Arc<Service>>) -> Response {
    let s = svc.clone();
    match tokio::task::spawn_blocking(move || s.modules()).await {
        Ok(m) => Json(m).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "error": e.to_string() }),
        ),
    }
}

/// Run `f` with the module's `(dlq topic, replay topic)` off the reactor.
async fn with_dlq<F>(svc: Arc<Service>, name: String, f: F) -> Response
where
    F: FnOnce(&Service, &str, &str) -> Result<Value, TopicError> + Send + 'static,
{
    let topics = match svc.dlq_topics(&name) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::NOT_FOUND, json!({ "error": e })),
    };
    match tokio::task::spawn_blocking(move || f(&svc, &topics.0, &topics.1)).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => topic_error(e),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "error": e.to_string() }),
        ),
    }
}

async fn dlq_summary(State(svc): State<Arc<Service>>, Path(name): Path<String>) -> Response {
    let module = name.clone();
    with_dlq(svc, name, move |svc, dlq_topic, _| {
        Ok(json!(crate::dlq::summary(&svc.log, &module, dlq_topic)?))
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
    with_dlq(svc, name, move |svc, dlq_topic, _| {
        let ids: Vec<String> = q.id.into_iter().collect();
        let frames = crate::dlq::select(&svc.log, dlq_topic, &ids)?;
        let total = frames.len();
        let events: Vec<Value> = frames
            .iter()
            .take(q.limit)
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
    with_dlq(svc, name, move |svc, dlq_topic, replay_topic| {
        let r = crate::dlq::replay(&svc.log, dlq_topic, replay_topic, &req.ids)?;
        Ok(json!(r))
    })
    .await
}

async fn dlq_purge(State(svc): State<Arc<Service>>, Path(name): Path<String>) -> Response {
    with_dlq(svc, name, move |svc, dlq_topic, _| {
        Ok(json!({ "purged": svc.log.truncate(dlq_topic)? }))
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
    if !svc.has_module(&name) {
        return error(
            StatusCode::NOT_FOUND,
            json!({ "error": format!("no module named `{name}`") }),
        );
    }
    let store = svc.store.clone();
    let limit = q.limit.clamp(1, 1_000_000);
    let res =
        tokio::task::spawn_blocking(move || store.dump_state(&name, q.prefix.as_bytes(), limit))
            .await;
    match res {
        Ok(Ok(entries)) => {
            let v: Vec<Value> = entries
                .into_iter()
                .map(|(p, (k, v))| json!({ "partition": p, "key": String::from_utf8_lossy(&k), "value": json::bytes_value(&v) }))
                .collect();
            Json(v).into_response()
        }
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "error": e.to_string() }),
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "error": e.to_string() }),
        ),
    }
}

//! The Confluent Schema Registry REST API (JSON Schema only) over the host's
//! own registry, so existing producers and tools register and fetch schemas
//! without a separate server. A subject is an event type.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /subjects` | every subject |
//! | `GET /subjects/{s}/versions` | its version numbers |
//! | `GET /subjects/{s}/versions/{v}` | one version (`latest` too): `{subject, version, id, schemaType, schema}` |
//! | `POST /subjects/{s}/versions` | register `{"schema": "<json text>", "schemaType": "JSON"}`: `{"id"}`; 409 if incompatible |
//! | `POST /subjects/{s}` | is this schema registered under `s`? (the version, or 404) |
//! | `GET /schemas/ids/{id}` | `{schema, schemaType}` |
//! | `POST /compatibility/subjects/{s}/versions/{v}` | `{"is_compatible", "messages"}` |
//! | `GET /config`, `PUT /config` | the mode new subjects get |
//! | `GET /config/{s}`, `PUT /config/{s}` | a subject's mode: `{"compatibilityLevel"}` / `{"compatibility": "FULL"}` |
//!
//! Errors are Confluent's: `{"error_code": 40401, "message": "..."}`.
//! Changes (POST, PUT) need the API token, as everywhere.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Service;
use crate::schema::RegisterError;
use crate::schema::api::Missing;

/// A Confluent-style error: `{"error_code", "message"}` with its status.
struct Fail(StatusCode, u32, String);

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(json!({"error_code": self.1, "message": self.2})),
        )
            .into_response()
    }
}

fn fail(status: StatusCode, code: u32, message: impl std::fmt::Display) -> Response {
    Fail(status, code, message.to_string()).into_response()
}

fn missing(m: Missing) -> Response {
    let code = match m {
        Missing::Subject(_) => 40401,
        Missing::Version(..) => 40402,
    };
    fail(StatusCode::NOT_FOUND, code, m)
}

fn refused(e: RegisterError) -> Response {
    match e {
        RegisterError::Incompatible { .. } | RegisterError::BreaksConsumer { .. } => {
            fail(StatusCode::CONFLICT, 409, e)
        }
        RegisterError::Invalid(_) => fail(StatusCode::UNPROCESSABLE_ENTITY, 42201, e),
        RegisterError::Store(_) => fail(StatusCode::INTERNAL_SERVER_ERROR, 50001, e),
    }
}

/// A schema as the API carries it: JSON text, JSON Schema only.
#[derive(Deserialize)]
pub(super) struct Body {
    schema: String,
    #[serde(default, rename = "schemaType")]
    schema_type: Option<String>,
}

impl Body {
    fn parse(&self) -> Result<Value, Fail> {
        if let Some(t) = &self.schema_type
            && t != "JSON"
        {
            return Err(Fail(
                StatusCode::UNPROCESSABLE_ENTITY,
                42201,
                format!("schemaType `{t}` is not supported here: JSON Schema only (`JSON`)"),
            ));
        }
        serde_json::from_str(&self.schema).map_err(|e| {
            Fail(
                StatusCode::UNPROCESSABLE_ENTITY,
                42201,
                format!("schema is not JSON: {e}"),
            )
        })
    }
}

/// A version as the API shows it.
fn shown(s: &str, v: &crate::schema::Version) -> Response {
    Json(json!({
        "subject": s, "version": v.version, "id": v.id,
        "schemaType": "JSON", "schema": v.schema.to_string(),
    }))
    .into_response()
}

pub(super) async fn subjects(State(svc): State<Arc<Service>>) -> Response {
    let names: Vec<String> = svc
        .schemas()
        .types()
        .iter()
        .map(|t| t.name.clone())
        .collect();
    Json(names).into_response()
}

pub(super) async fn versions(State(svc): State<Arc<Service>>, Path(s): Path<String>) -> Response {
    match svc.schemas().subject(&s) {
        Ok(t) => Json(t.versions.keys().copied().collect::<Vec<_>>()).into_response(),
        Err(m) => missing(m),
    }
}

pub(super) async fn version(
    State(svc): State<Arc<Service>>,
    Path((s, v)): Path<(String, String)>,
) -> Response {
    match svc.schemas().subject_version(&s, &v) {
        Ok(ver) => shown(&s, &ver),
        Err(m) => missing(m),
    }
}

pub(super) async fn register(
    State(svc): State<Arc<Service>>,
    Path(s): Path<String>,
    Json(body): Json<Body>,
) -> Response {
    let schema = match body.parse() {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let result = tokio::task::spawn_blocking(move || svc.schemas().register_next(&s, schema)).await;
    match result {
        Ok(Ok(v)) => Json(json!({"id": v.id})).into_response(),
        Ok(Err(e)) => refused(e),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, 50001, e),
    }
}

pub(super) async fn lookup(
    State(svc): State<Arc<Service>>,
    Path(s): Path<String>,
    Json(body): Json<Body>,
) -> Response {
    let schema = match body.parse() {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    match svc.schemas().lookup(&s, &schema) {
        Ok(Some(v)) => shown(&s, &v),
        Ok(None) => fail(StatusCode::NOT_FOUND, 40403, "Schema not found"),
        Err(m) => missing(m),
    }
}

pub(super) async fn by_id(State(svc): State<Arc<Service>>, Path(id): Path<u64>) -> Response {
    match svc.schemas().by_id(id) {
        Some((_, v)) => {
            Json(json!({"schemaType": "JSON", "schema": v.schema.to_string()})).into_response()
        }
        None => fail(
            StatusCode::NOT_FOUND,
            40403,
            format!("Schema {id} not found"),
        ),
    }
}

pub(super) async fn compatibility(
    State(svc): State<Arc<Service>>,
    Path((s, v)): Path<(String, String)>,
    Json(body): Json<Body>,
) -> Response {
    let schema = match body.parse() {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    match svc.schemas().incompatibilities(&s, &v, &schema) {
        Ok(m) => Json(json!({"is_compatible": m.is_empty(), "messages": m})).into_response(),
        Err(e) => missing(e),
    }
}

#[derive(Deserialize)]
pub(super) struct Config {
    compatibility: String,
}

fn mode(c: &Config) -> Result<sluice_schema::Mode, Fail> {
    c.compatibility
        .parse()
        .map_err(|e: sluice_schema::ParseModeError| {
            Fail(StatusCode::UNPROCESSABLE_ENTITY, 42203, e.to_string())
        })
}

pub(super) async fn get_config(State(svc): State<Arc<Service>>) -> Response {
    Json(json!({"compatibilityLevel": svc.schemas().default_mode().as_str()})).into_response()
}

pub(super) async fn put_config(State(svc): State<Arc<Service>>, Json(c): Json<Config>) -> Response {
    let m = match mode(&c) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    match svc.schemas().set_default_mode(m) {
        Ok(()) => Json(json!({"compatibility": m.as_str()})).into_response(),
        Err(e) => refused(e),
    }
}

pub(super) async fn get_subject_config(
    State(svc): State<Arc<Service>>,
    Path(s): Path<String>,
) -> Response {
    match svc.schemas().subject(&s) {
        Ok(t) => Json(json!({"compatibilityLevel": t.mode.as_str()})).into_response(),
        Err(m) => missing(m),
    }
}

pub(super) async fn put_subject_config(
    State(svc): State<Arc<Service>>,
    Path(s): Path<String>,
    Json(c): Json<Config>,
) -> Response {
    let m = match mode(&c) {
        Ok(m) => m,
        Err(r) => return r.into_response(),
    };
    match svc.schemas().set_mode(&s, m) {
        Ok(()) => Json(json!({"compatibility": m.as_str()})).into_response(),
        Err(e) => refused(e),
    }
}

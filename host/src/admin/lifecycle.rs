//! Module lifecycle over HTTP: deploy (and upgrade), rollback, pause, resume,
//! undeploy, rewind, and one module's detail with its revision history.
//!
//! A deploy is `POST /v1/modules` with
//! `{"manifest": "<module.toml text>", "component": "<base64 of the .wasm>",
//! "start": "earliest" | "latest" | "<RFC 3339>" | "<offset>"}` (`start`
//! optional). The work runs off the reactor: compiling a component takes
//! CPU, stopping a pipeline waits for its batch.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::error;
use crate::config::StartPosition;
use crate::{DeployRequest, LifecycleError, Service};

fn lifecycle_error(e: LifecycleError) -> Response {
    let status = match &e {
        LifecycleError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        LifecycleError::Conflict(_) => StatusCode::CONFLICT,
        LifecycleError::NotFound(_) => StatusCode::NOT_FOUND,
        LifecycleError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, json!({ "error": e.to_string() }))
}

/// Run a lifecycle operation on a blocking thread and answer with its result.
async fn blocking<T: serde::Serialize + Send + 'static>(
    f: impl FnOnce() -> Result<T, LifecycleError> + Send + 'static,
) -> Response {
    super::blocking(f, lifecycle_error).await
}

/// Parse a JSON request body, or answer 400 naming what is wrong.
#[allow(clippy::result_large_err)]
fn body<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, Response> {
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(text).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            json!({ "error": format!("{what}: {e}") }),
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Deploy {
    manifest: String,
    component: String,
    #[serde(default)]
    start: Option<String>,
}

pub(super) async fn deploy(State(svc): State<Arc<Service>>, bytes: Bytes) -> Response {
    let req: Deploy = match body(&bytes, "deploy request") {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let component = match base64::engine::general_purpose::STANDARD.decode(req.component.trim()) {
        Ok(c) => c,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                json!({ "error": format!("deploy request: component: not base64: {e}") }),
            );
        }
    };
    let (manifest, start) = (req.manifest, req.start);
    blocking(move || {
        svc.lifecycle().deploy(DeployRequest {
            manifest,
            component,
            source: "api".into(),
            start,
        })
    })
    .await
}

pub(super) async fn detail(State(svc): State<Arc<Service>>, Path(name): Path<String>) -> Response {
    blocking(move || {
        let mut detail = svc.lifecycle().module(&name)?;
        if let crate::deploy::status::DetailInfo::Deployed(info) = &mut detail.info {
            svc.annotate(info);
        }
        Ok(detail)
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rollback {
    #[serde(default)]
    to: Option<String>,
}

pub(super) async fn rollback(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Response {
    let req: Rollback = match body(&bytes, "rollback request") {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    blocking(move || svc.lifecycle().rollback(&name, req.to.as_deref())).await
}

pub(super) async fn pause(State(svc): State<Arc<Service>>, Path(name): Path<String>) -> Response {
    blocking(move || {
        svc.lifecycle()
            .pause(&name)
            .map(|was| json!({ "module": name, "paused": true, "was_running": was }))
    })
    .await
}

pub(super) async fn resume(State(svc): State<Arc<Service>>, Path(name): Path<String>) -> Response {
    blocking(move || {
        svc.lifecycle().resume(&name).map(|(paused, quarantined)| {
            json!({ "module": name, "was_paused": paused, "was_quarantined": quarantined })
        })
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct UndeployQuery {
    #[serde(default)]
    pub(super) purge: bool,
}

pub(super) async fn undeploy(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
    Query(q): Query<UndeployQuery>,
) -> Response {
    blocking(move || svc.lifecycle().undeploy(&name, q.purge)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rewind {
    to: String,
    #[serde(default)]
    reset_state: bool,
}

pub(super) async fn rewind(
    State(svc): State<Arc<Service>>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Response {
    let req: Rewind = match body(&bytes, "rewind request") {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let to: StartPosition = match req.to.parse() {
        Ok(t) => t,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                json!({ "error": format!("rewind request: to: {e}") }),
            );
        }
    };
    blocking(move || {
        svc.lifecycle().rewind(&name, to, req.reset_state).map(
            |plan| json!({ "module": name, "reset_state": req.reset_state, "partitions": plan }),
        )
    })
    .await
}

pub(super) async fn readyz(State(svc): State<Arc<Service>>) -> Response {
    let r = svc.readiness();
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(r)).into_response()
}

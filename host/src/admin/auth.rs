//! The API's guards: a bearer token on every mutating request, and every
//! error answered as JSON (including the ones axum produces itself, such as
//! 413 for an oversized body or 404 for an unknown path).
//!
//! The token is `[api] token` (or `SLUICE_API_TOKEN`, or `--token`); without
//! one, the token in `<data-dir>/api-token` is used, and on a loopback address
//! one is generated there at first start and printed once. The host refuses
//! to listen anywhere else without a token.

use std::net::SocketAddr;
use std::path::Path;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The token, and whether it was generated just now (the caller prints it).
pub fn resolve_token(
    configured: Option<&str>,
    data_dir: &Path,
    listen: SocketAddr,
) -> Result<(String, bool), String> {
    if let Some(t) = configured {
        return Ok((t.trim().to_string(), false));
    }
    let path = data_dir.join("api-token");
    if let Ok(t) = std::fs::read_to_string(&path)
        && !t.trim().is_empty()
    {
        return Ok((t.trim().to_string(), false));
    }
    if !listen.ip().is_loopback() {
        return Err(format!(
            "refusing to listen on {listen} without an API token: set [api] token, SLUICE_API_TOKEN or --token (or start once on a loopback address to generate {})",
            path.display()
        ));
    }
    let mut bytes = [0u8; 24];
    rand::Rng::fill(&mut rand::rng(), &mut bytes);
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(data_dir)
        .and_then(|()| write_private(&path, token.as_bytes()))
        .map_err(|e| {
            format!(
                "cannot store the generated API token in {}: {e}",
                path.display()
            )
        })?;
    Ok((token, true))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(bytes)
}

/// Compare without an early exit, so timing does not reveal a prefix.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The token, and whether reads need it too (`[api] read-token`).
#[derive(Clone)]
pub(super) struct Guard {
    pub(super) token: std::sync::Arc<str>,
    pub(super) reads: bool,
}

/// Refuse mutating requests (and, if so configured, reads other than the
/// health checks and the dashboard page, which asks for the token itself
/// and sends it with its API reads) without `Authorization: Bearer <token>`.
pub(super) async fn require_token(
    State(guard): State<Guard>,
    req: Request,
    next: Next,
) -> Response {
    let reads = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let health = matches!(req.uri().path(), "/healthz" | "/readyz" | "/");
    if reads && (!guard.reads || health) {
        return next.run(req).await;
    }
    let token = guard.token;
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t) if same(t.as_bytes(), token.as_bytes()) => next.run(req).await,
        other => {
            let why = if other.is_some() {
                "the bearer token is wrong"
            } else if reads {
                "this host requires `Authorization: Bearer <token>` for reads too ([api] read-token; SLUICE_API_TOKEN for the CLI)"
            } else {
                "this request changes something and needs `Authorization: Bearer <token>` (SLUICE_API_TOKEN for the CLI)"
            };
            let mut resp = (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({ "error": why })),
            )
                .into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"sluice\""),
            );
            resp
        }
    }
}

/// Turn an error response with a plain-text body into `{"error": "..."}`.
pub(super) async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match (status, text.is_empty()) {
        (StatusCode::PAYLOAD_TOO_LARGE, _) => {
            "request body too large: it exceeds [api] max-upload".to_string()
        }
        (_, true) => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string(),
        _ => text,
    };
    let bytes = serde_json::to_vec(&json!({ "error": message })).expect("serializes");
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_generated_once_on_loopback_and_required_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let lo: SocketAddr = "127.0.0.1:7070".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:7070".parse().unwrap();
        let e = resolve_token(None, dir.path(), any).unwrap_err();
        assert!(e.contains("refusing to listen on 0.0.0.0:7070"), "{e}");
        let (t, generated) = resolve_token(None, dir.path(), lo).unwrap();
        assert!(generated && t.len() == 48);
        // Kept: the second start uses it, and it then also allows any address.
        assert_eq!(
            resolve_token(None, dir.path(), lo).unwrap(),
            (t.clone(), false)
        );
        assert_eq!(resolve_token(None, dir.path(), any).unwrap().0, t);
        assert_eq!(
            resolve_token(Some("configured-token-1234"), dir.path(), any).unwrap(),
            ("configured-token-1234".into(), false)
        );
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"abc", b"ab"));
    }
}

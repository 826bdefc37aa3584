//! The host process: what `sluice run` does once its config is settled.
//!
//! [`run`] goes through start, serve and stop in this order:
//!
//! 1. Resolve the API token: the configured one, else `<data-dir>/api-token`,
//!    else (on a loopback address only) a new one stored there.
//! 2. Bind the listen address before anything else starts, so a port in use
//!    fails at once; then print a generated token, once.
//! 3. Open the [`Service`](crate::Service) and serve the HTTP API. Modules
//!    load on their own thread while `/healthz` already answers (`/readyz`
//!    says 503 until they are loaded).
//! 4. On SIGINT or SIGTERM (or if the server fails): stop taking requests,
//!    finish in-flight events and the outbox, shut the service down. If that
//!    takes longer than `shutdown-timeout`, exit with an error anyway.
//! 5. A second signal exits at once (status 130): committed work is safe,
//!    and the rest is redone at the next start.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::config::HostConfig;

/// Run the host with `config` until SIGINT or SIGTERM, then stop it
/// gracefully within `shutdown-timeout`.
pub fn run(config: HostConfig) -> anyhow::Result<()> {
    let addr = config.api.listen;
    let (token, generated) =
        crate::admin::auth::resolve_token(config.api.token.as_deref(), &config.data_dir, addr)
            .map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("sluice-io")
        .build()
        .context("cannot start the async runtime")?;
    // Bind first: a port in use should fail before anything else starts.
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(addr))
        .with_context(|| format!("cannot listen on {addr} (is another sluice running? change [api] listen or pass --listen)"))?;
    if generated {
        eprintln!(
            "generated an API token (stored in {}; shown only this once):\n  {token}\nclients: export SLUICE_API_TOKEN={token}",
            config.data_dir.join("api-token").display()
        );
    }
    let shutdown_timeout = config.shutdown_timeout;
    let svc = crate::Service::open(config)?;
    tracing::info!(%addr, "listening");
    let app = crate::admin::router(svc.clone(), Some(token));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = rt.spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });
    // Modules load while /healthz already answers (and /readyz says 503).
    let loader = {
        let svc = svc.clone();
        std::thread::Builder::new()
            .name("sluice-load".into())
            .spawn(move || svc.load_modules())
            .context("cannot start the module loader")?
    };
    // Until a signal, or until the server fails (then stop the same way).
    let failed = rt.block_on(async {
        tokio::select! {
            () = shutdown_signal() => None,
            r = &mut server => Some(match r {
                Ok(Ok(())) => anyhow::anyhow!("the API server stopped"),
                Ok(Err(e)) => anyhow::Error::new(e).context("API server failed"),
                Err(e) => anyhow::Error::new(e).context("API server task failed"),
            }),
        }
    });
    // A second signal exits at once; the core invariant keeps that safe.
    rt.spawn(async {
        shutdown_signal().await;
        eprintln!(
            "second signal: exiting now (committed work is safe; the rest is redone at start)"
        );
        std::process::exit(130);
    });
    tracing::info!(timeout = ?shutdown_timeout, "shutting down: no new requests; finishing in-flight events");
    let _ = stop_tx.send(());
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let stopping = svc.clone();
    std::thread::Builder::new()
        .name("sluice-shutdown".into())
        .spawn(move || {
            let _ = loader.join();
            stopping.shutdown();
            drop(stopping);
            let _ = done_tx.send(());
        })
        .context("cannot start the shutdown thread")?;
    if done_rx.recv_timeout(shutdown_timeout).is_err() {
        bail!(
            "shutdown did not finish within {shutdown_timeout:?} (shutdown-timeout); exiting anyway — committed work is safe and the rest is redone at start"
        );
    }
    let served = match failed {
        Some(e) => Err(e),
        None => match rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), server).await })
        {
            Ok(Ok(Err(e))) => Err(e).context("API server failed"),
            _ => Ok(()),
        },
    };
    // Close the database here, on this thread, before the process exits:
    // RocksDB closed while exit runs its static destructors aborts. The
    // runtime goes first, with the handlers that still hold the service.
    rt.shutdown_timeout(Duration::from_secs(5));
    if Arc::strong_count(&svc) > 1 {
        tracing::warn!("the service is still in use at exit; the database is not closed cleanly");
    }
    drop(svc);
    served
}

/// The first SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

//! `destinations run`: the service.

use std::future::IntoFuture;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{info, warn};

use super::{Failure, chain, load, start};

pub(crate) async fn run(path: &Path) -> Result<ExitCode, Failure> {
    let config = load(path)?;
    let runtime = start(&config).await?;
    let router = destinations::server::router(runtime.sender(), &config.server);
    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.server.listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    info!(%address, destinations = config.destinations.len(), "listening");
    if config.server.token.is_none() {
        warn!(
            "server.token is not set: the ingest API accepts events from anyone who can reach it"
        );
    }

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = Box::pin(
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .into_future(),
    );
    let deadline = config.shutdown.deadline;
    let mut stopping_until = None;
    let served = tokio::select! {
        served = &mut server => served,
        () = shutdown_signal() => {
            let now = tokio::time::Instant::now();
            // A deadline too long to add to the clock is a year.
            let until = now
                .checked_add(deadline)
                .unwrap_or(now + Duration::from_secs(365 * 24 * 3600));
            stopping_until = Some(until);
            // A second signal ends the process at once. Every accepted event is on disk;
            // deliveries not yet recorded as done are made again on the next start.
            tokio::spawn(async {
                shutdown_signal().await;
                warn!("second signal: exiting now; undelivered events stay queued");
                std::process::exit(130);
            });
            // New events get 503 from here on; requests already in flight may use the
            // shutdown deadline, which the deliveries then share.
            runtime.stop_intake();
            info!("shutting down: intake stopped, delivering what is queued");
            let _ = stop.send(());
            match tokio::time::timeout_at(until, &mut server).await {
                Ok(served) => served,
                Err(_) => {
                    drop(server);
                    warn!("requests still open at the shutdown deadline were cut off");
                    Ok(())
                }
            }
        }
    };
    let left = stopping_until.map_or(deadline, |until| {
        until.saturating_duration_since(tokio::time::Instant::now())
    });
    let stopped = runtime.shutdown_within(left).await;
    served.map_err(|e| format!("server failed: {e}"))?;
    stopped.map_err(|e| chain(&e))?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

//! `bookinfo`: runs one Bookinfo service (see `--help`).
#![forbid(unsafe_code)]

use anyhow::Context as _;
use clap::Parser as _;
use tokio::net::TcpListener;
use weft_bookinfo::{serve, Args, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::try_from(Args::parse())?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let proxy = config
        .proxy
        .as_ref()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "none".into());
    eprintln!(
        "bookinfo: {} ({} {}) listening on {}, http proxy {proxy}",
        config.workload,
        config.service,
        config.version,
        listener.local_addr().context("listener address")?,
    );
    serve(config, listener, shutdown_signal())
        .await
        .context("serving")?;
    eprintln!("bookinfo: stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

//! `weft-proxy`: parse flags, start logging, build the runtime, run the proxy.

use anyhow::Context;
use clap::Parser;
use weft_proxy::{Args, Config, LogFormat};

/// The system allocator, with cheaper over-aligned blocks (each connection's task): `memory::Allocator`.
#[global_allocator]
static ALLOCATOR: weft_proxy::memory::Allocator = weft_proxy::memory::Allocator;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .with_context(|| format!("--log-level={:?}", args.log_level))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Plain => builder.init(),
    }
    let config = Config::try_from(&args).context("invalid flags")?;
    tracing::info!(config = %serde_json::to_string(&config).unwrap_or_default(), "configuration");
    // One worker: a current-thread runtime (no work-stealing machinery on the request path); more: a
    // multi-threaded one with exactly that many workers.
    // One worker: the process has one thread, and memory is trimmed on it (see `memory`).
    weft_proxy::memory::trim_on_the_caller(config.concurrency == 1);
    let mut builder = if config.concurrency == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(config.concurrency);
        b
    };
    let runtime = builder
        .enable_all()
        .thread_name("weft-proxy")
        .build()
        .context("cannot build the tokio runtime")?;
    runtime.block_on(weft_proxy::run(config))?;
    Ok(())
}

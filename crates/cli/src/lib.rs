//! `weft`, the command line: demo, analyze, apply, delete, proxy-status, proxy-config.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod config;
pub mod dashboard;
pub mod demo;
pub mod http;
pub mod install;
pub mod secret;
pub mod status;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// weftd's debug address when none is given (the demo's).
pub const DEFAULT_WEFTD: &str = "127.0.0.1:15014";

/// The `weft` command line.
#[derive(Debug, Parser)]
#[command(
    name = "weft",
    version,
    about = "Weft service mesh: run, inspect and configure it"
)]
pub struct Cli {
    /// weftd's debug address (host:port).
    #[arg(long, global = true, env = "WEFT_WEFTD_ADDRESS", default_value = DEFAULT_WEFTD)]
    pub weftd: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run weftd, Bookinfo and a sidecar beside each workload on this machine.
    Demo {
        /// First three octets of the workloads' loopback addresses.
        #[arg(long, default_value = demo::DEFAULT_SUBNET)]
        subnet: String,
        /// weftd's address.
        #[arg(long, default_value = "127.0.0.1")]
        weftd_ip: String,
        /// Config directory (default: a new temporary one, removed on exit).
        #[arg(long)]
        config_dir: Option<PathBuf>,
        /// Directory of the weftd, weft-proxy and bookinfo binaries (default: beside this one).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// The cargo that runs this command, when `cargo run` does (cargo sets `CARGO`): the binaries
        /// missing beside this one are built with it first, so that `cargo run --release --bin weft --
        /// demo` works on a fresh checkout.
        #[arg(long, env = "CARGO", hide = true)]
        cargo: Option<PathBuf>,
    },
    /// Check Istio YAML files or directories; exit 1 on errors.
    Analyze {
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Validate and add resources to weftd's config directory.
    Apply {
        /// Files or directories.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Config directory (default: asked from weftd).
        #[arg(long, env = "WEFT_CONFIG_DIR")]
        config_dir: Option<PathBuf>,
    },
    /// Remove resources applied with `weft apply`.
    Delete {
        /// Files or directories naming the resources.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Config directory (default: asked from weftd).
        #[arg(long, env = "WEFT_CONFIG_DIR")]
        config_dir: Option<PathBuf>,
    },
    /// Sync status of every connected proxy, per xDS type.
    ProxyStatus {
        /// One proxy (workload, workload.namespace or node id) for detail.
        proxy: Option<String>,
    },
    /// What a proxy holds, in Envoy's config-dump shape; `secret`: its certificates, as a table.
    ProxyConfig {
        /// clusters, listeners, routes, endpoints, all, or secret.
        what: String,
        /// Proxy (workload, workload.namespace or node id; for secret also its admin address).
        proxy: String,
    },
    /// Print the address of weftd's console (service graph, metrics, traces) and open a browser on it.
    Dashboard {
        /// The console's address (default: weftd's host, port 20001).
        #[arg(long, env = "WEFT_CONSOLE_ADDRESS")]
        address: Option<String>,
        /// The browser to open it with.
        #[arg(long, env = "BROWSER", default_value = "xdg-open")]
        browser: String,
        /// Only print the address.
        #[arg(long)]
        no_browser: bool,
    },
    /// Print the configuration of an add-on for this mesh.
    #[command(subcommand)]
    Install(Install),
}

/// What `weft install` configures.
#[derive(Debug, Subcommand)]
pub enum Install {
    /// A Prometheus configuration scraping weftd (at --weftd) and every proxy it lists.
    Prometheus {
        /// How often to scrape, and to ask weftd for the proxies (`15s`, `500ms`).
        #[arg(long, default_value = install::DEFAULT_SCRAPE_INTERVAL, value_parser = parse_duration)]
        scrape_interval: std::time::Duration,
    },
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    weft_api::Duration::parse(s)
        .map(|d| d.get())
        .map_err(|e| e.to_string())
}

async fn config_dir(given: Option<PathBuf>, weftd: &str) -> anyhow::Result<PathBuf> {
    if let Some(d) = given {
        return Ok(d);
    }
    let v = http::get_json(weftd, "/debug/configz")
        .await
        .context("cannot ask weftd for its config directory (pass --config-dir)")?;
    v["configDir"]
        .as_str()
        .map(PathBuf::from)
        .context("weftd did not report a config directory")
}

/// Waits for SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

/// Runs a command; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Demo {
            subnet,
            weftd_ip,
            config_dir,
            bin_dir,
            cargo,
        } => {
            let beside_this_one = bin_dir.is_none();
            let bin_dir = match bin_dir {
                Some(b) => b,
                None => std::env::current_exe()
                    .context("cannot find this executable")?
                    .parent()
                    .context("executable has no directory")?
                    .to_path_buf(),
            };
            let keep = config_dir.is_some();
            let config_dir = config_dir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("weft-demo-{}", std::process::id()))
            });
            let layout = demo::Layout {
                subnet,
                weftd_ip,
                bin_dir,
                config_dir,
            };
            if let (Some(cargo), true) = (cargo, beside_this_one) {
                layout.build_missing(&cargo).await?;
            }
            demo::run(layout, keep).await?;
            Ok(0)
        }
        Command::Analyze { paths } => {
            let errors = config::analyze_paths(&paths)?;
            Ok(if errors > 0 { 1 } else { 0 })
        }
        Command::Apply {
            files,
            config_dir: d,
        } => {
            let dir = config_dir(d, &cli.weftd).await?;
            config::apply(&dir, &files)?;
            Ok(0)
        }
        Command::Delete {
            files,
            config_dir: d,
        } => {
            let dir = config_dir(d, &cli.weftd).await?;
            config::delete(&dir, &files)?;
            Ok(0)
        }
        Command::ProxyStatus { proxy } => {
            status::proxy_status(&cli.weftd, proxy.as_deref()).await?;
            Ok(0)
        }
        Command::ProxyConfig { what, proxy } if secret::is_secret(&what) => {
            secret::proxy_config_secret(&cli.weftd, &proxy).await?;
            Ok(0)
        }
        Command::ProxyConfig { what, proxy } => {
            status::proxy_config(&cli.weftd, &what, &proxy).await?;
            Ok(0)
        }
        Command::Dashboard {
            address,
            browser,
            no_browser,
        } => {
            let addr = dashboard::console_address(&cli.weftd, address.as_deref());
            dashboard::run(&addr, (!no_browser).then_some(browser.as_str())).await?;
            Ok(0)
        }
        Command::Install(Install::Prometheus { scrape_interval }) => {
            print!(
                "{}",
                install::prometheus_config(&cli.weftd, scrape_interval)?
            );
            Ok(0)
        }
    }
}

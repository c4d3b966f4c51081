//! `weft-bench`: `upstream`, `load` and `run` (see the crate docs and README's "Performance").

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::time::Duration;
use weft_bench::load::{self, LoadConfig, Rate, Workload};
use weft_bench::{run, upstream};

/// Weft's end-to-end benchmark suite.
#[derive(Parser)]
#[command(name = "weft-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The upstream every target forwards to: 1 KiB answers over HTTP/1.1 and h2c, gRPC unary, or a TCP sink.
    Upstream {
        /// Address to listen on (repeat for more).
        #[arg(long, required = true)]
        listen: Vec<SocketAddr>,
        /// http (HTTP/1.1 + h2c + gRPC) or tcp (sink).
        #[arg(long, value_enum, default_value = "http")]
        kind: upstream::Kind,
    },
    /// The load generator: prints {p50_us,p90_us,p99_us,p999_us,rps,errors,requests,bytes}.
    Load {
        /// Address to connect to.
        #[arg(long)]
        target: SocketAddr,
        /// Host header (HTTP/1.1) or :authority (HTTP/2); weft-proxy routes by it.
        #[arg(long)]
        host: Option<String>,
        /// http1-keepalive-1k, http2-streams, grpc-unary, tcp-stream or http1-new-conn.
        #[arg(long)]
        workload: Workload,
        /// Requests per second (open loop, latency corrected for coordinated omission) or max (closed loop).
        #[arg(long)]
        rate: Rate,
        /// Seconds.
        #[arg(long, default_value_t = 8.0)]
        duration: f64,
        /// Connections (HTTP/2: h2c connections; new-conn: requests in flight at most).
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Concurrent streams per h2c connection.
        #[arg(long, default_value_t = 16)]
        streams: usize,
        /// Print JSON (the default output is also JSON, pretty-printed).
        #[arg(long)]
        json: bool,
        /// Also print the latency histogram ("histogram": [[nanoseconds, count], ...]), so that runs can be
        /// merged.
        #[arg(long)]
        histogram: bool,
    },
    /// Runs every target and workload in interleaved rounds and writes bench/results/latest.{json,md}.
    Run(run::RunArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Upstream { listen, kind } => {
            current_thread()?.block_on(upstream::run(&listen, kind))
        }
        Command::Load {
            target,
            host,
            workload,
            rate,
            duration,
            connections,
            streams,
            json,
            histogram,
        } => {
            let cfg = LoadConfig {
                target,
                host,
                workload,
                rate,
                duration: Duration::from_secs_f64(duration.max(0.0)),
                connections,
                streams,
            };
            let mut result = current_thread()?.block_on(load::run(&cfg))?;
            if !histogram {
                result.histogram.clear();
            }
            if json {
                println!("{}", serde_json::to_string(&result)?);
            } else {
                println!("{}", serde_json::to_string_pretty(&result)?);
            }
            Ok(())
        }
        Command::Run(args) => {
            run::install_interrupt_handler()?;
            run::run(args).map(|_| ())
        }
    }
}

/// The load generator and the upstream share CPU 0: one thread each, no work stealing to pay for.
fn current_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

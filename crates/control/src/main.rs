//! weftd: parse flags, start logging, run the control plane.
use anyhow::Context;
use clap::Parser;
use weft_control::{check, run, Args, Config};

fn init_logging(level: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

fn main() -> anyhow::Result<()> {
    // `weftd token`: its own flags (weftd's need --config-dir), so it is dispatched before them.
    if std::env::args_os().nth(1).is_some_and(|a| a == "token") {
        let args = weft_control::ca::token::TokenArgs::parse_from(std::env::args_os().skip(1));
        println!("{}", weft_control::ca::token::token_command(&args)?);
        return Ok(());
    }
    let args = Args::parse();
    if args.check {
        let diags = check(&args.config_dir);
        for d in &diags {
            println!("{d}");
        }
        let errors = diags.iter().filter(|d| d.is_error()).count();
        std::process::exit(if errors > 0 { 1 } else { 0 });
    }
    init_logging(&args.log_level, &args.log_format);
    let config = Config::try_from(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(run(config)).context("weftd failed")
}

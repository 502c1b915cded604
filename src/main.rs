//! `pushrelay` binary: parse the command line, start logging, run.
use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = pushrelay::cli::Cli::parse();
    pushrelay::telemetry::init_tracing();
    let code = pushrelay::cli::run(cli).await;
    std::process::exit(code);
}

//! `pushrelay` binary: parse the command line, run, exit with its code.
use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = pushrelay::cli::Cli::parse();
    let code = pushrelay::cli::run(cli).await;
    std::process::exit(code);
}

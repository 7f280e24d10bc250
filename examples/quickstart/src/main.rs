//! Runs the quickstart: `cargo run -p quickstart`.

use clap::Parser as _;

/// The quickstart's command line: no options besides `--help` and
/// `--version`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "quickstart",
    version,
    about = "Two Confidant parties in one process, through an in-memory relay: \
             invitation, bundle, X3DH, messages both ways, a key update and a reset, \
             printed step by step"
)]
struct Args {}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Args {} = Args::parse();
    quickstart::run(&mut std::io::stdout())?;
    Ok(())
}

//! Runs the quickstart: `cargo run -p quickstart`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    quickstart::run(&mut std::io::stdout())?;
    Ok(())
}

//! Registers the example suite and seals one message with it.

use clap::Parser as _;
use confidant_core::SuiteRegistry;

/// The example's command line: no options besides `--help` and
/// `--version`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "custom-cipher",
    version,
    about = "Registers the example's own cipher suite (XChaCha20-Poly1305) and seals one message with it"
)]
struct Args {}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Args {} = Args::parse();
    let mut registry = SuiteRegistry::new();
    custom_cipher::register(&mut registry)?;
    let suite = registry.get(custom_cipher::XCHACHA20_POLY1305_COUNTER)?;

    // In a real session the key comes from the X3DH secret, per direction.
    let mut cipher = suite.direction_cipher(&[0x42; 32], &[])?;
    let mut message = b"hello from a custom suite".to_vec();
    cipher.seal(0, b"example associated data", &mut message)?;

    let sealed: String = message.iter().map(|byte| format!("{byte:02x}")).collect();
    println!("suite {} ({})", suite.id(), suite.name());
    println!("message 0 sealed: {sealed}");
    Ok(())
}

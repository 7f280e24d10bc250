//! The native figure for `WebHolder.timeSealOpen`: the same loop, timed
//! with `std::time::Instant`. `cargo run --release -p confidant-web
//! --example seal_open` (see `docs/web.md`, "Measured").

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let start = std::time::Instant::now();
    let now = || start.elapsed().as_secs_f64() * 1e3;
    for bytes in [64usize, 1024, 16 * 1024] {
        // Warm up, then time.
        confidant_web::bench::seal_open(bytes, 2_000, now)?;
        let timing = confidant_web::bench::seal_open(bytes, 20_000, now)?;
        println!(
            "native {} {bytes} B: seal {:.0} ns/msg, open {:.0} ns/msg",
            timing.suite, timing.seal_ns, timing.open_ns
        );
    }
    Ok(())
}

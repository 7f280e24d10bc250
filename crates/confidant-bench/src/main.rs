//! Benchmarks of Confidant against the raw primitives, measured in the same run.

fn main() {}

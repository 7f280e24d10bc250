//! Two Confidant parties in memory: bundle, X3DH and messages both ways, printed step by step.

fn main() {}

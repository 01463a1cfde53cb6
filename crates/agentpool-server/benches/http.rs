//! Benchmark of the HTTP worker protocol (placeholder until written).
fn main() {}

//! The collector daemon (placeholder until its run loop lands).

fn main() {}

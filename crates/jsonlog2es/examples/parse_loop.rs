//! The parse limit for the log-shipping benchmark: read a JSON-lines file and parse every line
//! into a `serde_json::Value`, nothing else. `parse_loop FILE` prints `lines N`.

use std::io::{BufRead, BufReader};

fn main() -> std::io::Result<()> {
    let path = std::env::args().nth(1).expect("usage: parse_loop FILE");
    let mut reader = BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut line = Vec::new();
    let mut lines = 0u64;
    while reader.read_until(b'\n', &mut line)? > 0 {
        let v: serde_json::Value = serde_json::from_slice(&line).map_err(std::io::Error::other)?;
        std::hint::black_box(v);
        lines += 1;
        line.clear();
    }
    println!("lines {lines}");
    Ok(())
}

//! `ironwork`: the module CLI.

fn main() {
    eprintln!("ironwork: not yet available");
    std::process::exit(2);
}

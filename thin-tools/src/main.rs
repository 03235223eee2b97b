//! `thin <tool> …` multi-call binary. No tool is implemented yet; every invocation says so
//! and fails, rather than pretending to work.
fn main() {
    eprintln!("thin: no tools are implemented yet (see the thin-tools issue)");
    std::process::exit(2);
}

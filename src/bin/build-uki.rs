//! `build-uki`: not implemented yet; see README.md for what is.

use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--version" || a == "-V") {
        println!("build-uki {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    eprintln!("error: build-uki is not available in this version of sbkit yet; see README.md");
    ExitCode::from(2)
}

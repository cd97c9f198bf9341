//! `sbkit`: the host launcher. `test-boot` boots signed media in OVMF with
//! Secure Boot enforced and gives a verdict; `genkey`, `build-uki` and
//! `enroll` run the suite's tools (with `--native`, the binaries next to this
//! one). The grammar and the run live in `sbkit::cli::sbkit`.

fn main() -> std::process::ExitCode {
    sbkit::cli::sbkit::main()
}

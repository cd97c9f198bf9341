//! `build-uki`: a root filesystem into signed Unified Kernel Images with a
//! signed TPM PCR 11 policy. Kairos-compatible command line; the grammar and
//! the run live in `sbkit::cli::build_uki`.

fn main() -> std::process::ExitCode {
    sbkit::cli::build_uki::main()
}

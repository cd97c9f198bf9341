//! `genkey`: make a Secure Boot key hierarchy (PK, KEK, db) and a TPM PCR
//! policy key, with signature lists and `.auth` files. Kairos-compatible.
//! The grammar and the run live in `sbkit::cli::genkey`.

fn main() -> std::process::ExitCode {
    sbkit::cli::genkey::main()
}

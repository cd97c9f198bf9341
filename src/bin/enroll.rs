//! `enroll`: put a key directory's PK, KEK and db into firmware (a machine in
//! setup mode, systemd-boot's auto-enroll files on an ESP, or an OVMF variable
//! store), and show the Secure Boot state. The grammar and the run live in
//! `sbkit::cli::enroll`.

fn main() -> std::process::ExitCode {
    sbkit::cli::enroll::main()
}

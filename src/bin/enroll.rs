//! `enroll`: put a key directory's PK, KEK and db into firmware (a machine in
//! setup mode, systemd-boot's auto-enroll files on an ESP, or an OVMF variable
//! store), and show the Secure Boot state.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sbkit::enroll::efivarfs::DEFAULT_EFIVARFS;
use sbkit::enroll::optionrom::DEFAULT_EVENTLOG;
use sbkit::enroll::{efivars, esp, ovmf, status};
use sbkit::media::loader::SecureBootEnroll;

/// Enroll Secure Boot keys into firmware, and show what firmware holds.
#[derive(Parser, Debug)]
#[command(name = "enroll", version, after_help = AFTER_HELP)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show SetupMode, SecureBoot and the contents of PK, KEK, db and dbx.
    Status {
        /// Read an OVMF variable store file instead of the running machine.
        #[arg(long)]
        vars: Option<PathBuf>,
        /// efivarfs directory of the running machine.
        #[arg(long, default_value = DEFAULT_EFIVARFS, conflicts_with = "vars")]
        efivarfs: PathBuf,
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Enroll into a running machine in setup mode through efivarfs (dbx, db, KEK, then PK).
    Efivars {
        /// Key directory made by genkey (PK.auth, KEK.auth, db.auth; dbx.auth if present).
        #[arg(short, long)]
        keys: PathBuf,
        /// Check everything and show what would be written; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// efivarfs directory.
        #[arg(long, default_value = DEFAULT_EFIVARFS)]
        efivarfs: PathBuf,
        /// TPM event log, read to find option ROMs.
        #[arg(long, default_value = DEFAULT_EVENTLOG)]
        eventlog: PathBuf,
        /// Enroll even though option ROMs may then be refused (the machine may
        /// lose its display or boot device).
        #[arg(long = "yes-this-might-brick-my-machine")]
        yes_this_might_brick_my_machine: bool,
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Write an OVMF variable store holding the keys (Secure Boot on).
    Ovmf {
        /// The store to start from, e.g. /usr/share/OVMF/OVMF_VARS_4M.fd.
        #[arg(long)]
        template: PathBuf,
        /// Key directory made by genkey (PK.esl, KEK.esl, db.esl; dbx.esl if present).
        #[arg(short, long)]
        keys: PathBuf,
        /// The store to write.
        #[arg(short, long)]
        output: PathBuf,
        /// Leave PK out: the firmware boots in setup mode (to test enrollment).
        #[arg(long)]
        setup_mode: bool,
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Write systemd-boot's auto-enroll files (loader/keys/NAME/*.auth) and loader.conf.
    Esp {
        /// The EFI system partition (its mount point or a directory tree).
        esp: PathBuf,
        /// Key directory made by genkey.
        #[arg(short, long)]
        keys: PathBuf,
        /// Key set name under loader/keys/ ("auto" is the one enrolled without asking).
        #[arg(long, default_value = esp::DEFAULT_NAME)]
        name: String,
        /// loader.conf secure-boot-enroll: manual, force, if-safe (systemd 253+) or off.
        /// Default: keep an existing line, else if-safe for systemd-boot 253+ and manual before.
        #[arg(long = "secure-boot-enroll")]
        secure_boot_enroll: Option<SecureBootEnroll>,
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

const AFTER_HELP: &str = "\
efivars refuses outside setup mode, and when the TPM event log shows option ROMs while db
lacks Microsoft's option-ROM CAs (the machine could lose its display or boot disk).
Errors go to stderr; --json prints the report on stdout.";

fn print<T: serde::Serialize>(
    json: bool,
    report: &T,
    text: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", text(report));
    }
    Ok(())
}

fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Status {
            vars,
            efivarfs,
            json,
        } => {
            let s = match vars {
                Some(file) => status::from_vars_file(&file)?,
                None => status::from_efivarfs(&efivarfs)?,
            };
            print(json, &s, status::render)
        }
        Command::Efivars {
            keys,
            dry_run,
            efivarfs,
            eventlog,
            yes_this_might_brick_my_machine,
            json,
        } => {
            let report = efivars::run(&efivars::EfivarsOptions {
                keys,
                efivarfs,
                eventlog,
                dry_run,
                ignore_option_roms: yes_this_might_brick_my_machine,
            })?;
            sbkit::cli::warn_all(&report.warnings);
            print(json, &report, efivars::render)
        }
        Command::Ovmf {
            template,
            keys,
            output,
            setup_mode,
            json,
        } => {
            let report = ovmf::run(&ovmf::OvmfOptions {
                template,
                keys,
                output,
                setup_mode,
            })
            .context("enroll ovmf failed; no store was written")?;
            sbkit::cli::warn_all(&report.warnings);
            print(json, &report, ovmf::render)
        }
        Command::Esp {
            esp: dir,
            keys,
            name,
            secure_boot_enroll,
            json,
        } => {
            let report = esp::run(&esp::EspOptions {
                esp: dir,
                keys,
                name,
                enroll: secure_boot_enroll,
            })?;
            sbkit::cli::warn_all(&report.warnings);
            print(json, &report, esp::render)
        }
    }
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => sbkit::cli::fail(&e),
    }
}

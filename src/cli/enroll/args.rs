//! enroll's command line: `status`, `efivars`, `ovmf` and `esp`, with every
//! host path typed by its use (see `cli::path_arg`).

use clap::{Parser, Subcommand};

use crate::cli::path_arg::{InputDir, InputFile, OutputDir, OutputFile};
use crate::enroll::efivarfs::DEFAULT_EFIVARFS;
use crate::enroll::esp;
use crate::enroll::optionrom::DEFAULT_EVENTLOG;
use crate::media::loader::SecureBootEnroll;

/// Enroll Secure Boot keys into firmware, and show what firmware holds.
#[derive(Parser, Debug)]
#[command(name = "enroll", version, after_help = AFTER_HELP)]
pub struct EnrollArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// enroll's subcommands, one per way into firmware (and `status`, `pcr7`).
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show SetupMode, SecureBoot and the contents of PK, KEK, db and dbx.
    Status {
        /// Read an OVMF variable store file instead of the running machine.
        #[arg(long)]
        vars: Option<InputFile>,
        /// efivarfs directory of the running machine.
        #[arg(long, default_value = DEFAULT_EFIVARFS, conflicts_with = "vars")]
        efivarfs: InputDir,
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Enroll into a running machine in setup mode through efivarfs (dbx, db, KEK, then PK).
    Efivars {
        /// Key directory made by genkey (PK.auth, KEK.auth, db.auth; dbx.auth if present).
        #[arg(short, long)]
        keys: InputDir,
        /// Check everything and show what would be written; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// efivarfs directory.
        #[arg(long, default_value = DEFAULT_EFIVARFS)]
        efivarfs: OutputDir,
        /// TPM event log, read to find option ROMs.
        #[arg(long, default_value = DEFAULT_EVENTLOG)]
        eventlog: InputFile,
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
        template: InputFile,
        /// Key directory made by genkey (PK.esl, KEK.esl, db.esl; dbx.esl if present).
        #[arg(short, long)]
        keys: InputDir,
        /// The store to write.
        #[arg(short, long)]
        output: OutputFile,
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
        esp: OutputDir,
        /// Key directory made by genkey.
        #[arg(short, long)]
        keys: InputDir,
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
    /// Predict PCR 7 (the Secure Boot policy the TPM measures) for the next boot,
    /// and whether a planned change of the variables moves it.
    Pcr7 {
        /// Read an OVMF variable store file instead of the running machine.
        #[arg(long, conflicts_with = "keys")]
        vars: Option<InputFile>,
        /// Predict for a key directory's lists as enroll would put them in firmware.
        #[arg(short, long)]
        keys: Option<InputDir>,
        /// efivarfs directory of the running machine (when neither --vars nor --keys).
        #[arg(long, default_value = DEFAULT_EFIVARFS)]
        efivarfs: InputDir,
        /// An image the firmware loads, in load order (repeatable): systemd-boot, the UKI.
        #[arg(long = "image")]
        images: Vec<InputFile>,
        /// Planned: the variables of this key directory replace the current ones.
        #[arg(long = "after-keys", conflicts_with = "after_vars")]
        after_keys: Option<InputDir>,
        /// Planned: the variables of this OVMF store replace the current ones.
        #[arg(long = "after-vars")]
        after_vars: Option<InputFile>,
        /// Planned: append this signature list or append .auth to db (repeatable).
        #[arg(long = "append-db")]
        append_db: Vec<InputFile>,
        /// Planned: append this signature list or append .auth to dbx (repeatable).
        #[arg(long = "append-dbx")]
        append_dbx: Vec<InputFile>,
        /// Write the predicted events (after the change, when one is planned) as a
        /// systemd-pcrlock `.pcrlock` file.
        #[arg(long)]
        pcrlock: Option<OutputFile>,
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

const AFTER_HELP: &str = "\
efivars refuses outside setup mode, and when the TPM event log shows option ROMs while db
lacks Microsoft's option-ROM CAs (the machine could lose its display or boot disk).
Errors go to stderr; --json prints the report on stdout.";

//! `genkey`: make a Secure Boot key hierarchy (PK, KEK, db) and a TPM PCR
//! policy key, with signature lists and `.auth` files. Kairos-compatible.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use sbkit::efi::microsoft::MicrosoftSelection;
use sbkit::efi::Guid;
use sbkit::genkey::{self, GenkeyOptions};
use sbkit::keys::KeyAlgorithm;

#[path = "genkey/token_cli.rs"]
mod token_cli;
use token_cli::Command;

/// Generate a Secure Boot key hierarchy (PK, KEK, db), a TPM PCR-policy key,
/// and the EFI signature lists and authenticated variables firmware takes.
#[derive(Parser, Debug)]
#[command(
    name = "genkey",
    version,
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    /// Organisation name: certificates are "CN=<NAME> PK|KEK|db, O=<NAME>".
    #[arg(required = true)]
    name: Option<String>,

    /// Key directory to create.
    #[arg(short, long, default_value = "keys")]
    output: PathBuf,

    /// Certificate validity in days.
    #[arg(short = 'e', long = "expiration-in-days", default_value_t = 365)]
    expiration_in_days: u32,

    /// Key type of PK, KEK and db: rsa2048 (default, what all firmware
    /// verifies), rsa3072, rsa4096, p256, p384.
    #[arg(long = "key-type", default_value = "rsa2048")]
    key_type: KeyAlgorithm,

    /// Microsoft certificates to enroll: all, 2023, uefi-ca, option-rom, none.
    #[arg(long, default_value = "all")]
    microsoft: MicrosoftSelection,

    /// Enroll no Microsoft certificate (Kairos flag; same as --microsoft none).
    #[arg(long = "skip-microsoft-certs-I-KNOW-WHAT-IM-DOING")]
    skip_microsoft: bool,

    /// Merge the PK, KEK, db and dbx exported from a machine's firmware
    /// (ESL with or without the efivarfs prefix, .auth, DER or PEM files).
    #[arg(long = "custom-cert-dir")]
    custom_cert_dir: Option<PathBuf>,

    /// Replace an existing key set; the old files move to replaced-<time>/.
    #[arg(long, conflicts_with = "reuse_keys")]
    force: bool,

    /// Keep the private keys in the directory; remake certificates, lists and .auth files.
    #[arg(long = "reuse-keys")]
    reuse_keys: bool,

    /// Owner GUID of our entries (default: the directory's, else random).
    #[arg(long = "owner-guid")]
    owner_guid: Option<Guid>,

    /// Directory layout: kairos (flat, plaintext keys 0600; the default) or
    /// hardened (secureboot/{pk,kek,db}/ with age-encrypted keys, fingerprints/,
    /// revoked/, rotation/, backups/ templates, README; keys decrypted only in memory).
    #[arg(long, default_value = "kairos")]
    layout: genkey::KeyLayout,

    /// Passphrase of the hardened layout's keys: prompt (asked twice), file:PATH or env:VAR.
    #[arg(long)]
    passphrase: Option<String>,

    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
}

const AFTER_HELP: &str = "\
Files written: PK/KEK/db .key (PKCS#8, 0600) .pem .der .esl .auth, dbx.esl/.auth when an
export has dbx entries, tpm2-pcr-private.pem (0600), tpm2-pcr-public.pem, manifest.json.
SOURCE_DATE_EPOCH fixes certificate start and .auth timestamps for reproducible output.";

fn run(args: Args) -> anyhow::Result<()> {
    let microsoft = if args.skip_microsoft {
        MicrosoftSelection::None
    } else {
        args.microsoft
    };
    if let Some(cmd) = args.command {
        return token_cli::run(cmd);
    }
    let opts = GenkeyOptions {
        name: args.name.unwrap_or_default(),
        output: args.output,
        days: args.expiration_in_days,
        algorithm: args.key_type,
        microsoft,
        custom_cert_dir: args.custom_cert_dir,
        force: args.force,
        reuse_keys: args.reuse_keys,
        owner_guid: args.owner_guid,
        timestamp: sbkit::cli::build_timestamp()?,
        layout: args.layout,
        // Parsed here, not by clap: clap's error would echo the value, which may be the secret.
        passphrase: args
            .passphrase
            .as_deref()
            .map(str::parse::<sbkit::secret::SecretSource>)
            .transpose()?,
    };
    let progress = sbkit::cli::spinner(false);
    let report = genkey::run(&opts, &progress);
    progress.finish_and_clear();
    let report = report.context("genkey failed; nothing was changed")?;
    sbkit::cli::warn_all(&report.warnings);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", genkey::render_summary(&report));
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<token_cli::ChecksFailed>().is_some() => ExitCode::FAILURE,
        Err(e) => sbkit::cli::fail(&e),
    }
}

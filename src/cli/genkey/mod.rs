//! The `genkey` binary: its grammar ([`args`]) and its run, flags turned
//! into `crate::genkey` options in one place.

pub mod append;
pub mod args;
pub mod token;

use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};

use crate::efi::microsoft::MicrosoftSelection;
use crate::genkey::{self, GenkeyOptions};
pub use args::GenkeyArgs;

/// genkey's clap command, with completion hints from the path marks.
pub fn command() -> clap::Command {
    crate::cli::path_arg::with_hints(GenkeyArgs::command())
}

/// Makes the key set (or runs a `token` subcommand).
pub fn run(args: GenkeyArgs) -> anyhow::Result<()> {
    let microsoft = if args.skip_microsoft {
        MicrosoftSelection::None
    } else {
        args.microsoft
    };
    match args.command {
        Some(args::Command::Token(cmd)) => return token::run(cmd),
        Some(args::Command::Append(a)) => return append::run(a),
        None => {}
    }
    let opts = GenkeyOptions {
        name: args.name.unwrap_or_default(),
        output: args.output.into(),
        days: args.expiration_in_days,
        algorithm: args.key_type,
        microsoft,
        custom_cert_dir: args.custom_cert_dir.map(Into::into),
        force: args.force,
        reuse_keys: args.reuse_keys,
        owner_guid: args.owner_guid,
        timestamp: crate::cli::build_timestamp()?,
        layout: args.layout,
        // Parsed here, not by clap: clap's error would echo the value, which may be the secret.
        passphrase: args
            .passphrase
            .as_deref()
            .map(str::parse::<crate::secret::SecretSource>)
            .transpose()?,
    };
    let progress = crate::cli::spinner(false);
    let report = genkey::run(&opts, &progress);
    progress.finish_and_clear();
    let report = report.context("genkey failed; nothing was changed")?;
    crate::cli::warn_all(&report.warnings);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", genkey::render_summary(&report));
    }
    Ok(())
}

/// The binary's `main`: parse, run, and map the outcome to an exit code.
pub fn main() -> ExitCode {
    let matches = command().get_matches();
    let args = match GenkeyArgs::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<token::ChecksFailed>().is_some() => ExitCode::FAILURE,
        Err(e) => crate::cli::fail(&e),
    }
}

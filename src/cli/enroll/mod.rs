//! The `enroll` binary: its grammar ([`args`]) and its run, flags turned
//! into `crate::enroll` options in one place.

pub mod args;

use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};

use crate::enroll::{efivars, esp, ovmf, pcr7, status};
pub use args::{Command, EnrollArgs};

/// enroll's clap command, with completion hints from the path marks.
pub fn command() -> clap::Command {
    crate::cli::path_arg::with_hints(EnrollArgs::command())
}

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

/// Runs one enroll subcommand.
pub fn run(args: EnrollArgs) -> anyhow::Result<()> {
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
                keys: keys.into(),
                efivarfs: efivarfs.into(),
                eventlog: eventlog.into(),
                dry_run,
                ignore_option_roms: yes_this_might_brick_my_machine,
            })?;
            crate::cli::warn_all(&report.warnings);
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
                template: template.into(),
                keys: keys.into(),
                output: output.into(),
                setup_mode,
            })
            .context("enroll ovmf failed; no store was written")?;
            crate::cli::warn_all(&report.warnings);
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
                esp: dir.into(),
                keys: keys.into(),
                name,
                enroll: secure_boot_enroll,
            })?;
            crate::cli::warn_all(&report.warnings);
            print(json, &report, esp::render)
        }
        Command::Pcr7 {
            vars,
            keys,
            efivarfs,
            images,
            after_keys,
            after_vars,
            append_db,
            append_dbx,
            pcrlock,
            json,
        } => {
            let source = match (vars, keys) {
                (Some(file), _) => pcr7::VariableSource::Vars(file.into()),
                (None, Some(dir)) => pcr7::VariableSource::Keys(dir.into()),
                (None, None) => pcr7::VariableSource::Efivarfs(efivarfs.into()),
            };
            let replace_with = match (after_keys, after_vars) {
                (Some(dir), _) => Some(pcr7::VariableSource::Keys(dir.into())),
                (None, Some(file)) => Some(pcr7::VariableSource::Vars(file.into())),
                (None, None) => None,
            };
            let report = pcr7::run(&pcr7::Pcr7Options {
                source,
                images: images.into_iter().map(Into::into).collect(),
                change: pcr7::PlannedChange {
                    replace_with,
                    append_db: append_db.into_iter().map(Into::into).collect(),
                    append_dbx: append_dbx.into_iter().map(Into::into).collect(),
                },
            })
            .context("enroll pcr7 could not predict PCR 7")?;
            if let Some(file) = pcrlock {
                let path: std::path::PathBuf = file.into();
                let events = report.plan.after.as_ref().unwrap_or(&report.plan.before);
                let text = serde_json::to_vec_pretty(&events.pcrlock())?;
                crate::store::write::write_file(&path, &text, crate::store::write::Access::Public)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            crate::cli::warn_all(&report.warnings);
            print(json, &report, pcr7::render)
        }
    }
}

/// The binary's `main`: parse, run, and map the outcome to an exit code.
pub fn main() -> ExitCode {
    let matches = command().get_matches();
    let args = match EnrollArgs::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => crate::cli::fail(&e),
    }
}

//! `genkey append db|dbx`: flags into a [`crate::lifecycle::append`] update,
//! signed by the key directory's KEK from whatever backend holds it.

use std::path::PathBuf;

use anyhow::Context;

use super::args::{AppendArgs, AppendVariable};
use crate::keys::KeyRole;
use crate::lifecycle::append::{self, AppendEntry};
use crate::store::keydir::{KeyDir, Unlock};
use crate::store::layout::Role;
use crate::store::write::{write_new_file, Access};

/// Makes the append update and writes `.auth` and `.esl`, never over existing files.
pub fn run(args: AppendArgs) -> anyhow::Result<()> {
    let keys: PathBuf = args.keys.into();
    let output: PathBuf = args.output.into();
    let esl_path = output.with_extension("esl");
    let mut entries: Vec<AppendEntry> = Vec::new();
    for (i, cert) in args.certs.into_iter().enumerate() {
        let path: PathBuf = cert.into();
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        entries.push(
            append::certificate_entry(i + 1, &bytes)
                .with_context(|| format!("--cert {}", path.display()))?,
        );
    }
    for hash in &args.hashes {
        entries.push(append::hash_entry(hash)?);
    }
    for image in args.images {
        let path: PathBuf = image.into();
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        entries.push(append::image_entry(&path.display().to_string(), &bytes)?);
    }
    let dir = KeyDir::open(&keys);
    let owner = match args.owner_guid {
        Some(g) => g,
        None => crate::store::manifest::Manifest::read(&keys)?
            .map(|m| m.owner_guid)
            .with_context(|| {
                format!(
                    "{} has no manifest.json to take the owner GUID from; pass --owner-guid",
                    keys.display()
                )
            })?,
    };
    let kek_cert = dir.certificate(KeyRole::Kek)?;
    let kek = dir
        .load_signer(KeyRole::Kek, &Unlock::from_env())
        .context("loading the KEK, which signs db and dbx updates")?;
    let variable = match args.variable {
        AppendVariable::Db => Role::Db,
        AppendVariable::Dbx => Role::Dbx,
    };
    let update = append::append_update(
        variable,
        owner,
        &entries,
        crate::cli::build_timestamp()?,
        kek.as_ref(),
        &kek_cert,
    )?;
    // Both names are checked before either is written, so a refusal leaves nothing.
    for path in [&output, &esl_path] {
        if std::fs::symlink_metadata(path).is_ok() {
            anyhow::bail!(
                "{} exists; an append update is never overwritten: choose another --output",
                path.display()
            );
        }
    }
    write_new_file(&esl_path, &update.esl, Access::Public)?;
    write_new_file(&output, &update.auth, Access::Public)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&update)?);
    } else {
        println!(
            "{} append update: {} entr{} signed by KEK at {}\n  {}\n  {}\nApply it in user mode: enroll efivars writes it to a running machine.",
            update.variable,
            update.entries,
            if update.entries == 1 { "y" } else { "ies" },
            update.timestamp,
            output.display(),
            esl_path.display()
        );
    }
    Ok(())
}

//! `genkey token …`: runs the token-held signing key workflow (output only;
//! the work is in `crate::provision`).

use anyhow::Context;

use super::args::{TargetArgs, TokenCommand};
use crate::cli::path_arg::SecretRef;
use crate::provision::{self, audit, piv, BackupSpec, KeySpec, Placement, Target};
use crate::secret::SecretSource;

/// A run whose checks failed; the report is already printed.
#[derive(Debug, thiserror::Error)]
#[error("some checks failed")]
pub struct ChecksFailed;

impl TargetArgs {
    fn placement(&self) -> anyhow::Result<Placement> {
        let mut targets = Vec::new();
        for t in &self.tokens {
            targets.push(t.parse::<Target>().map_err(anyhow::Error::msg)?);
        }
        targets.extend(self.pivs.iter().map(|r| Target::Piv(r.clone())));
        Ok(Placement {
            targets,
            label: self.label.clone(),
            id: provision::parse_id(&self.id).map_err(anyhow::Error::msg)?,
            always_authenticate: self.always_authenticate,
            replace: self.replace,
            piv_module: self.piv_module.clone().map(Into::into),
            signature_dir: self.signature_dir.clone().map(Into::into),
        })
    }
}

/// Parses a secret source here rather than in clap: clap's error message
/// would echo the value, which may be the secret itself.
fn secret(s: &SecretRef) -> anyhow::Result<SecretSource> {
    Ok(s.parse::<SecretSource>()?)
}

fn secret_opt(s: Option<SecretRef>) -> anyhow::Result<Option<SecretSource>> {
    s.as_ref().map(secret).transpose()
}

fn finish(report: &provision::ProvisionReport, json: bool) -> anyhow::Result<()> {
    crate::cli::warn_all(&report.warnings);
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", provision::render(report));
    }
    if report.passed() {
        Ok(())
    } else {
        Err(ChecksFailed.into())
    }
}

/// Runs a `genkey token` subcommand.
pub fn run(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Status { piv, json } => {
            let mut all = Vec::new();
            for r in &piv {
                let st = piv::Card::open(r)
                    .and_then(|mut c| c.status())
                    .with_context(|| format!("reading the PIV card in {r:?}"))?;
                all.push(st);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                for st in &all {
                    println!(
                        "{} firmware {} serial {}",
                        st.reader,
                        st.version,
                        st.serial.map(|s| s.to_string()).unwrap_or("?".into())
                    );
                    for l in st.default_checks() {
                        println!("  {}", l.render());
                    }
                    println!(
                        "  PIN tries left {}, PUK tries left {}, slot 9c certificate: {}",
                        st.pin_retries.map(|n| n.to_string()).unwrap_or("?".into()),
                        st.puk_retries.map(|n| n.to_string()).unwrap_or("?".into()),
                        if st.slot_9c_certificate { "yes" } else { "no" }
                    );
                }
            }
            Ok(())
        }
        TokenCommand::Prepare(a) => {
            let r = piv::prepare(&piv::PrepareOptions {
                reader: a.piv.clone(),
                pin: secret_opt(a.pin)?,
                new_pin: secret_opt(a.new_pin)?,
                puk: secret_opt(a.puk)?,
                new_puk: secret_opt(a.new_puk)?,
                rotate_management_key: a.rotate_management_key,
            })
            .with_context(|| format!("preparing the PIV card in {:?}", a.piv))?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for s in &r.steps {
                    println!("- {s}");
                }
                for l in r.after.default_checks() {
                    println!("{}", l.render());
                }
            }
            Ok(())
        }
        TokenCommand::Create(a) => {
            let placement = a.targets.placement()?;
            let spec = KeySpec {
                organization: a.organization.unwrap_or_else(|| a.common_name.clone()),
                common_name: a.common_name,
                algorithm: a.key_type,
                days: a.days,
                not_before: crate::cli::build_timestamp()?,
            };
            let report = provision::create(
                &spec,
                &BackupSpec {
                    path: a.backup.into(),
                    format: a.backup_format,
                    passphrase: secret(&a.passphrase)?,
                },
                &placement,
                a.cert_out.as_deref(),
            )
            .context("token create failed")?;
            finish(&report, a.targets.json)
        }
        TokenCommand::Restore(a) => {
            let placement = a.targets.placement()?;
            let report = provision::restore(
                &a.backup,
                &secret(&a.passphrase)?,
                a.cert.as_deref(),
                &placement,
            )
            .context("token restore failed")?;
            finish(&report, a.targets.json)
        }
        TokenCommand::Verify(a) => {
            let placement = a.targets.placement()?;
            let cert_der = crate::store::signing::read_certificate(&a.cert)?;
            let algorithm = match a.key_type {
                Some(k) => k,
                None => openssl::x509::X509::from_der(&cert_der)
                    .ok()
                    .and_then(|x| x.public_key().ok())
                    .and_then(|k| k.public_key_to_der().ok())
                    .and_then(|d| provision::check::algorithm_of_spki(&d))
                    .context("the certificate's key is not one sbkit uses")?,
            };
            let expected = provision::Expected {
                cert_der: cert_der.clone(),
                algorithm,
                label: Some(placement.label.clone()),
                id: placement.id.clone(),
            };
            let tokens = provision::verify_targets(&expected, &placement)?;
            let checks = provision::check::cross_checks(&tokens, Some(&expected.cert_sha256()));
            let report = audit::AuditReport {
                lines: tokens
                    .iter()
                    .flat_map(|t| {
                        t.checks.iter().map(move |c| provision::CheckLine {
                            check: format!("{} #{}: {}", t.token_label, t.token_serial, c.check),
                            ..c.clone()
                        })
                    })
                    .chain(checks)
                    .collect(),
                tokens,
            };
            print_audit(&report, a.targets.json)
        }
        TokenCommand::Audit(a) => {
            let placement = a.targets.placement()?;
            let report = audit::audit(&audit::AuditOptions {
                placement,
                algorithm: a.key_type,
                certificate: a.cert.map(Into::into),
                backup: a.backup.map(Into::into),
                passphrase: secret_opt(a.passphrase)?,
                key_dir: a.key_dir.map(Into::into),
            })?;
            print_audit(&report, a.targets.json)
        }
        TokenCommand::Mkosi {
            token_label,
            id,
            cert_file,
        } => {
            let id = provision::parse_id(&id).map_err(anyhow::Error::msg)?;
            let c = provision::mkosi::config(&token_label, &id, cert_file.as_deref());
            print!("{}", c.validation_block);
            println!(
                "\n# plain URIs:\n# key         {}\n# certificate {}",
                c.key_uri, c.cert_uri
            );
            Ok(())
        }
    }
}

fn print_audit(report: &audit::AuditReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", report.render());
    }
    if report.passed() {
        Ok(())
    } else {
        Err(ChecksFailed.into())
    }
}

//! `genkey token …`: the token-held signing key workflow (argument parsing
//! and output only; the work is in `sbkit::provision`).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args as ClapArgs, Subcommand};
use sbkit::backup::BackupFormat;
use sbkit::keys::KeyAlgorithm;
use sbkit::provision::{self, audit, piv, BackupSpec, KeySpec, Placement, Target};
use sbkit::secret::SecretSource;

/// A run whose checks failed; the report is already printed.
#[derive(Debug, thiserror::Error)]
#[error("some checks failed")]
pub struct ChecksFailed;

/// Subcommands of genkey.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Keys held on tokens (YubiKey PIV, any PKCS#11): the mkosi/ParticleOS recipe, scripted.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// `genkey token …`
#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Show a PIV card's state: firmware, serial, retries left, default PIN/PUK/management key.
    Status {
        /// The card: the PC/SC reader whose name contains this text.
        #[arg(long = "piv", value_name = "READER", required = true)]
        piv: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Prepare a PIV card: new PIN and PUK, random management key stored PIN-protected.
    Prepare(PrepareArgs),
    /// Generate a key in memory, back it up encrypted, load it onto every token, verify.
    Create(CreateArgs),
    /// Load a backup onto replacement tokens, verify.
    Restore(RestoreArgs),
    /// Check tokens: same certificate and key, label/ID/URIs, test signature.
    Verify(VerifyArgs),
    /// The recipe's checklist against the real state, one PASS/FAIL line per item.
    Audit(AuditArgs),
    /// Print the mkosi [Validation] block and URIs for a token key.
    Mkosi {
        /// Token label as the PKCS#11 module shows it.
        #[arg(long = "token-label", default_value = "mkosi")]
        token_label: String,
        /// CKA_ID, hex (YubiKey slot 9c is 02).
        #[arg(long, default_value = "02")]
        id: String,
        /// A certificate file for mkosi versions without SecureBootCertificateSource=.
        #[arg(long = "cert-file")]
        cert_file: Option<String>,
    },
}

/// Where the key goes and how it is checked.
#[derive(ClapArgs, Debug)]
pub struct TargetArgs {
    /// A PKCS#11 token, as an RFC 7512 URI selecting it (token=, serial=,
    /// ?module-path=); repeat for each token. The key is created with C_CreateObject.
    #[arg(long = "token", value_name = "URI")]
    tokens: Vec<String>,
    /// A YubiKey: the PC/SC reader whose name contains READER; repeat for each card.
    /// The key goes into PIV slot 9c.
    #[arg(long = "piv", value_name = "READER")]
    pivs: Vec<String>,
    /// CKA_ID of the objects, hex (YubiKey slot 9c is 02 through OpenSC).
    #[arg(long, default_value = "02")]
    id: String,
    /// CKA_LABEL of the objects on PKCS#11 tokens.
    #[arg(long, default_value = "mkosi")]
    label: String,
    /// Mark the key CKA_ALWAYS_AUTHENTICATE (a PIN for every signature, as YubiKey slot 9c).
    #[arg(long = "always-authenticate")]
    always_authenticate: bool,
    /// Replace objects with the same ID / a key already in slot 9c.
    #[arg(long)]
    replace: bool,
    /// PKCS#11 module used to check PIV cards (default: OpenSC).
    #[arg(long = "piv-module")]
    piv_module: Option<PathBuf>,
    /// Write each token's test signature (message, DER signature, public key) here.
    #[arg(long = "signature-dir")]
    signature_dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

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
            piv_module: self.piv_module.clone(),
            signature_dir: self.signature_dir.clone(),
        })
    }
}

/// `genkey token prepare`
#[derive(ClapArgs, Debug)]
pub struct PrepareArgs {
    /// The card: the PC/SC reader whose name contains this text.
    #[arg(long = "piv", value_name = "READER")]
    piv: String,
    /// Current PIN: prompt, file:PATH or env:VAR (default: the factory PIN while the card reports it).
    #[arg(long)]
    pin: Option<String>,
    /// New PIN (6-8 characters): prompt, file:PATH or env:VAR.
    #[arg(long = "new-pin")]
    new_pin: Option<String>,
    /// Current PUK (default: the factory PUK while the card reports it).
    #[arg(long)]
    puk: Option<String>,
    /// New PUK (6-8 characters).
    #[arg(long = "new-puk")]
    new_puk: Option<String>,
    /// Make a new random management key even if it is already not the default.
    #[arg(long = "rotate-management-key")]
    rotate_management_key: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `genkey token create`
#[derive(ClapArgs, Debug)]
pub struct CreateArgs {
    /// Certificate common name (the recipe's "mkosi").
    #[arg(long = "cn", default_value = "mkosi")]
    common_name: String,
    /// Certificate organisation (default: the common name).
    #[arg(long)]
    organization: Option<String>,
    /// p384 (the recipe; fine for mkosi-signed images verified by Linux) or
    /// rsa2048 (what every firmware verifies: db signing and TPM PCR policies need RSA).
    #[arg(long = "key-type", default_value = "p384")]
    key_type: KeyAlgorithm,
    /// Validity in days (the recipe: 10 years).
    #[arg(long, default_value_t = 3650)]
    days: u32,
    /// The encrypted backup to write (never overwritten).
    #[arg(long)]
    backup: PathBuf,
    /// age (default; authenticated) or openssl-enc (`openssl enc -aes-256-cbc -pbkdf2`).
    #[arg(long = "backup-format", default_value = "age")]
    backup_format: BackupFormat,
    /// Backup passphrase: prompt (asked twice), file:PATH or env:VAR.
    #[arg(long, default_value = "prompt")]
    passphrase: String,
    /// Write the certificate (PEM) here.
    #[arg(long = "cert-out")]
    cert_out: Option<PathBuf>,
    #[command(flatten)]
    targets: TargetArgs,
}

/// `genkey token restore`
#[derive(ClapArgs, Debug)]
pub struct RestoreArgs {
    /// The encrypted backup (age or openssl-enc).
    #[arg(long)]
    backup: PathBuf,
    /// Backup passphrase: prompt, file:PATH or env:VAR.
    #[arg(long, default_value = "prompt")]
    passphrase: String,
    /// The certificate, for a plain `openssl enc` key backup without one.
    #[arg(long)]
    cert: Option<PathBuf>,
    #[command(flatten)]
    targets: TargetArgs,
}

/// `genkey token verify`
#[derive(ClapArgs, Debug)]
pub struct VerifyArgs {
    /// The certificate every token must hold.
    #[arg(long)]
    cert: PathBuf,
    /// The algorithm the key must have (default: the certificate's).
    #[arg(long = "key-type")]
    key_type: Option<KeyAlgorithm>,
    #[command(flatten)]
    targets: TargetArgs,
}

/// `genkey token audit`
#[derive(ClapArgs, Debug)]
pub struct AuditArgs {
    /// The encrypted backup that must exist.
    #[arg(long)]
    backup: Option<PathBuf>,
    /// Its passphrase (to check it opens to the tokens' key): prompt, file:PATH or env:VAR.
    #[arg(long)]
    passphrase: Option<String>,
    /// The certificate the tokens must hold (default: the backup's).
    #[arg(long)]
    cert: Option<PathBuf>,
    /// The algorithm asked for.
    #[arg(long = "key-type")]
    key_type: Option<KeyAlgorithm>,
    /// A key directory that must hold no plaintext private key.
    #[arg(long = "key-dir")]
    key_dir: Option<PathBuf>,
    #[command(flatten)]
    targets: TargetArgs,
}

/// Parses a secret source here rather than in clap: clap's error message
/// would echo the value, which may be the secret itself.
fn secret(s: &str) -> anyhow::Result<SecretSource> {
    Ok(s.parse::<SecretSource>()?)
}

fn secret_opt(s: Option<String>) -> anyhow::Result<Option<SecretSource>> {
    s.as_deref().map(secret).transpose()
}

fn finish(report: &provision::ProvisionReport, json: bool) -> anyhow::Result<()> {
    sbkit::cli::warn_all(&report.warnings);
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

/// Runs a genkey subcommand.
pub fn run(cmd: Command) -> anyhow::Result<()> {
    let Command::Token(cmd) = cmd;
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
                not_before: sbkit::cli::build_timestamp()?,
            };
            let report = provision::create(
                &spec,
                &BackupSpec {
                    path: a.backup,
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
            let cert_der = sbkit::store::signing::read_certificate(&a.cert)?;
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
                certificate: a.cert,
                backup: a.backup,
                passphrase: secret_opt(a.passphrase)?,
                key_dir: a.key_dir,
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

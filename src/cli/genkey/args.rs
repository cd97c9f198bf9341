//! genkey's command line: the key-set arguments and the `token` subcommands,
//! with every host path typed by its use (see `cli::path_arg`).

use clap::{Args as ClapArgs, Parser, Subcommand};

use crate::backup::BackupFormat;
use crate::cli::path_arg::{InputDir, InputFile, OutputDir, OutputFile, SecretRef};
use crate::efi::microsoft::MicrosoftSelection;
use crate::efi::Guid;
use crate::genkey::KeyLayout;
use crate::keys::KeyAlgorithm;

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
pub struct GenkeyArgs {
    /// A subcommand instead of making a key set.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Organisation name: certificates are "CN=<NAME> PK|KEK|db, O=<NAME>".
    #[arg(required = true)]
    pub name: Option<String>,

    /// Key directory to create.
    #[arg(short, long, default_value = "keys")]
    pub output: OutputDir,

    /// Certificate validity in days.
    #[arg(short = 'e', long = "expiration-in-days", default_value_t = 365)]
    pub expiration_in_days: u32,

    /// Key type of PK, KEK and db: rsa2048 (default, what all firmware
    /// verifies), rsa3072, rsa4096, p256, p384.
    #[arg(long = "key-type", default_value = "rsa2048")]
    pub key_type: KeyAlgorithm,

    /// Microsoft certificates to enroll: all, 2023, uefi-ca, option-rom, none.
    #[arg(long, default_value = "all")]
    pub microsoft: MicrosoftSelection,

    /// Enroll no Microsoft certificate (Kairos flag; same as --microsoft none).
    #[arg(long = "skip-microsoft-certs-I-KNOW-WHAT-IM-DOING")]
    pub skip_microsoft: bool,

    /// Merge the PK, KEK, db and dbx exported from a machine's firmware
    /// (ESL with or without the efivarfs prefix, .auth, DER or PEM files).
    #[arg(long = "custom-cert-dir")]
    pub custom_cert_dir: Option<InputDir>,

    /// Replace an existing key set; the old files move to replaced-<time>/.
    #[arg(long, conflicts_with = "reuse_keys")]
    pub force: bool,

    /// Keep the private keys in the directory; remake certificates, lists and .auth files.
    #[arg(long = "reuse-keys")]
    pub reuse_keys: bool,

    /// Owner GUID of our entries (default: the directory's, else random).
    #[arg(long = "owner-guid")]
    pub owner_guid: Option<Guid>,

    /// Directory layout: kairos (flat, plaintext keys 0600; the default) or
    /// hardened (secureboot/{pk,kek,db}/ with age-encrypted keys, fingerprints/,
    /// revoked/, rotation/, backups/ templates, README; keys decrypted only in memory).
    #[arg(long, default_value = "kairos")]
    pub layout: KeyLayout,

    /// Passphrase of the hardened layout's keys: prompt (asked twice), file:PATH or env:VAR.
    #[arg(long)]
    pub passphrase: Option<SecretRef>,

    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

const AFTER_HELP: &str = "\
Files written: PK/KEK/db .key (PKCS#8, 0600) .pem .der .esl .auth, dbx.esl/.auth when an
export has dbx entries, tpm2-pcr-private.pem (0600), tpm2-pcr-public.pem, manifest.json.
SOURCE_DATE_EPOCH fixes certificate start and .auth timestamps for reproducible output.";

/// Subcommands of genkey.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Keys held on tokens (YubiKey PIV, any PKCS#11): the mkosi/ParticleOS recipe, scripted.
    #[command(subcommand)]
    Token(TokenCommand),
    /// A KEK-signed append update of db or dbx (attributes 0x67): adds entries
    /// in user mode, without setup mode and without restating the variable.
    Append(AppendArgs),
}

/// Which variable an append update adds to.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendVariable {
    /// The signature database: what may boot.
    Db,
    /// The forbidden signature database: what may never boot.
    Dbx,
}

/// `genkey append db|dbx …`
#[derive(ClapArgs, Debug)]
pub struct AppendArgs {
    /// The variable to add to.
    #[arg(value_enum)]
    pub variable: AppendVariable,
    /// Key directory whose KEK signs the update (and whose owner GUID the entries get).
    #[arg(short, long)]
    pub keys: InputDir,
    /// A certificate to add (PEM or DER; repeatable).
    #[arg(long = "cert")]
    pub certs: Vec<InputFile>,
    /// A SHA-256 hash to add, 64 hex digits (repeatable).
    #[arg(long = "hash")]
    pub hashes: Vec<String>,
    /// An EFI image whose Authenticode SHA-256 digest to add (repeatable): in dbx,
    /// exactly this image stops booting.
    #[arg(long = "image")]
    pub images: Vec<InputFile>,
    /// The `.auth` file to write (never overwritten); the `.esl` is written beside it.
    #[arg(short, long)]
    pub output: OutputFile,
    /// Owner GUID of the entries (default: the key directory's).
    #[arg(long = "owner-guid")]
    pub owner_guid: Option<Guid>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
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
        /// A certificate path written into the mkosi configuration (not read
        /// here), for mkosi versions without SecureBootCertificateSource=.
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
    pub tokens: Vec<String>,
    /// A YubiKey: the PC/SC reader whose name contains READER; repeat for each card.
    /// The key goes into PIV slot 9c.
    #[arg(long = "piv", value_name = "READER")]
    pub pivs: Vec<String>,
    /// CKA_ID of the objects, hex (YubiKey slot 9c is 02 through OpenSC).
    #[arg(long, default_value = "02")]
    pub id: String,
    /// CKA_LABEL of the objects on PKCS#11 tokens.
    #[arg(long, default_value = "mkosi")]
    pub label: String,
    /// Mark the key CKA_ALWAYS_AUTHENTICATE (a PIN for every signature, as YubiKey slot 9c).
    #[arg(long = "always-authenticate")]
    pub always_authenticate: bool,
    /// Replace objects with the same ID / a key already in slot 9c.
    #[arg(long)]
    pub replace: bool,
    /// PKCS#11 module used to check PIV cards (default: OpenSC).
    #[arg(long = "piv-module")]
    pub piv_module: Option<InputFile>,
    /// Write each token's test signature (message, DER signature, public key) here.
    #[arg(long = "signature-dir")]
    pub signature_dir: Option<OutputDir>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `genkey token prepare`
#[derive(ClapArgs, Debug)]
pub struct PrepareArgs {
    /// The card: the PC/SC reader whose name contains this text.
    #[arg(long = "piv", value_name = "READER")]
    pub piv: String,
    /// Current PIN: prompt, file:PATH or env:VAR (default: the factory PIN while the card reports it).
    #[arg(long)]
    pub pin: Option<SecretRef>,
    /// New PIN (6-8 characters): prompt, file:PATH or env:VAR.
    #[arg(long = "new-pin")]
    pub new_pin: Option<SecretRef>,
    /// Current PUK (default: the factory PUK while the card reports it).
    #[arg(long)]
    pub puk: Option<SecretRef>,
    /// New PUK (6-8 characters).
    #[arg(long = "new-puk")]
    pub new_puk: Option<SecretRef>,
    /// Make a new random management key even if it is already not the default.
    #[arg(long = "rotate-management-key")]
    pub rotate_management_key: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `genkey token create`
#[derive(ClapArgs, Debug)]
pub struct CreateArgs {
    /// Certificate common name (the recipe's "mkosi").
    #[arg(long = "cn", default_value = "mkosi")]
    pub common_name: String,
    /// Certificate organisation (default: the common name).
    #[arg(long)]
    pub organization: Option<String>,
    /// p384 (the recipe; fine for mkosi-signed images verified by Linux) or
    /// rsa2048 (what every firmware verifies: db signing and TPM PCR policies need RSA).
    #[arg(long = "key-type", default_value = "p384")]
    pub key_type: KeyAlgorithm,
    /// Validity in days (the recipe: 10 years).
    #[arg(long, default_value_t = 3650)]
    pub days: u32,
    /// The encrypted backup to write (never overwritten).
    #[arg(long)]
    pub backup: OutputFile,
    /// age (default; authenticated) or openssl-enc (`openssl enc -aes-256-cbc -pbkdf2`).
    #[arg(long = "backup-format", default_value = "age")]
    pub backup_format: BackupFormat,
    /// Backup passphrase: prompt (asked twice), file:PATH or env:VAR.
    #[arg(long, default_value = "prompt")]
    pub passphrase: SecretRef,
    /// Write the certificate (PEM) here.
    #[arg(long = "cert-out")]
    pub cert_out: Option<OutputFile>,
    /// Where the key goes.
    #[command(flatten)]
    pub targets: TargetArgs,
}

/// `genkey token restore`
#[derive(ClapArgs, Debug)]
pub struct RestoreArgs {
    /// The encrypted backup (age or openssl-enc).
    #[arg(long)]
    pub backup: InputFile,
    /// Backup passphrase: prompt, file:PATH or env:VAR.
    #[arg(long, default_value = "prompt")]
    pub passphrase: SecretRef,
    /// The certificate, for a plain `openssl enc` key backup without one.
    #[arg(long)]
    pub cert: Option<InputFile>,
    /// Where the key goes.
    #[command(flatten)]
    pub targets: TargetArgs,
}

/// `genkey token verify`
#[derive(ClapArgs, Debug)]
pub struct VerifyArgs {
    /// The certificate every token must hold.
    #[arg(long)]
    pub cert: InputFile,
    /// The algorithm the key must have (default: the certificate's).
    #[arg(long = "key-type")]
    pub key_type: Option<KeyAlgorithm>,
    /// The tokens to check.
    #[command(flatten)]
    pub targets: TargetArgs,
}

/// `genkey token audit`
#[derive(ClapArgs, Debug)]
pub struct AuditArgs {
    /// The encrypted backup that must exist.
    #[arg(long)]
    pub backup: Option<InputFile>,
    /// Its passphrase (to check it opens to the tokens' key): prompt, file:PATH or env:VAR.
    #[arg(long)]
    pub passphrase: Option<SecretRef>,
    /// The certificate the tokens must hold (default: the backup's).
    #[arg(long)]
    pub cert: Option<InputFile>,
    /// The algorithm asked for.
    #[arg(long = "key-type")]
    pub key_type: Option<KeyAlgorithm>,
    /// A key directory that must hold no plaintext private key.
    #[arg(long = "key-dir")]
    pub key_dir: Option<InputDir>,
    /// The tokens to check.
    #[command(flatten)]
    pub targets: TargetArgs,
}

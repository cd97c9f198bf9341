//! sbkit: a container-first Secure Boot / Trusted Boot tool suite.
//!
//! The binaries (`genkey`, `build-uki`, `enroll`, `sbkit`) only parse
//! arguments; everything they do lives in this library, one module per concern:
//!
//! - [`efi`]: byte formats of UEFI (GUIDs, signature lists, authenticated variables, vendor certificates).
//! - [`keys`]: key generation, the [`keys::Signer`] abstraction, X.509 profiles, PKCS#7.
//! - [`store`]: key directories on disk: layout, manifest, atomic writes, firmware exports.
//! - [`genkey`]: the `genkey` command.
//! - [`cli`]: each binary's grammar (path arguments marked by type) and run, man pages and completions.
//! - [`engine`]: the one Docker engine client (launcher and `docker-daemon:` images).
//! - [`secret`]: secrets in locked, wiped memory; passphrase/PIN sources (prompt, file, env).
//! - [`backup`]: encrypted key backups (age, `openssl enc -aes-256-cbc -pbkdf2`).
//! - [`provision`]: token-held signing keys: generate in memory, back up, load onto PKCS#11 tokens and YubiKey PIV cards, verify, audit.
//! - [`progress`]: how long-running library work reports progress (implemented with bars in `cli`).
//! - [`names`]: checks on names and values that become file names or configuration lines.
//! - [`lifecycle`]: changes to an enrolled chain of trust (KEK-signed db/dbx append updates).
//! - [`tpm`]: what the TPM will measure, predicted (PCR 7; PCR 11 lives in [`uki`]).
//!
//! Every public item is documented: the lint below keeps it so.

#![warn(missing_docs)]

pub mod backup;
pub mod build_uki;
pub mod cli;
pub mod efi;
pub mod engine;
pub mod enroll;
pub mod genkey;
pub mod initrd;
pub mod keys;
pub mod launcher;
pub mod lifecycle;
pub mod media;
pub mod names;
pub mod pe;
pub mod progress;
pub mod provision;
pub mod rootfs;
pub mod secret;
pub mod store;
pub mod testboot;
pub mod token;
pub mod tpm;
pub mod uki;

//! The `enroll` command: putting a key directory's PK, KEK, db (and dbx) into
//! firmware, and showing what firmware holds.
//!
//! - [`status`]: the Secure Boot state from efivarfs or an OVMF variable store.
//! - [`efivars`]: a running machine in setup mode, through efivarfs, behind
//!   the option-ROM guard ([`optionrom`]).
//! - [`ovmf`]: an OVMF variable store for virtual machines (our own writer,
//!   [`crate::efi::varstore`]).
//! - [`esp`]: systemd-boot's auto-enroll layout on an ESP.
//!
//! [`keyset`] reads and checks the key directory for all of them; [`efivarfs`]
//! owns the kernel interface. Byte formats live in [`crate::efi`].

pub mod efivarfs;
pub mod efivars;
pub mod esp;
pub mod keyset;
pub mod optionrom;
pub mod ovmf;
pub mod pcr7;
pub mod status;

//! Maintaining a chain of trust once it is enrolled: changes the firmware
//! takes in user mode (Secure Boot on, PK enrolled), signed by the key the
//! UEFI spec puts in charge of each variable.
//!
//! - [`append`]: KEK-signed append updates of db and dbx (certificates,
//!   SHA-256 hashes, the Authenticode digest of an image to revoke).

pub mod append;

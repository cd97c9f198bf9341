//! Secrets in memory and where they come from.
//!
//! [`memory`] hardens the process (no core dumps, not dumpable, OpenSSL's
//! locked secure heap) and provides [`LockedBytes`], the mlocked, wiped
//! buffer every private key copy, passphrase and PIN of the token and backup
//! workflows lives in. [`source`] reads a secret from a terminal prompt, a
//! file or an environment variable — never from the command line.

pub mod memory;
pub mod source;

pub use memory::{harden_for_private_keys, harden_process, Hardening, LockedBytes};
pub use source::{SecretError, SecretSource};

//! Trusted Boot: what the TPM will measure, predicted before it happens.
//!
//! - [`pcr7`]: PCR 7, the Secure Boot policy (variables, separator, the db
//!   entries that authorised each loaded image), as edk2 measures it.
//!
//! PCR 11 (the UKI's sections) lives with the UKI in [`crate::uki`].

pub mod pcr7;

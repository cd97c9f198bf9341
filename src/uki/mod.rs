//! Unified Kernel Images: assembly from systemd-stub, stub inspection, PCR 11
//! prediction and the signed `.pcrsig` policy, boot entries, and reading the
//! kernel's release.

pub mod assemble;
pub mod entries;
pub mod kernel;
pub mod pcr;
pub mod pcrsig;
pub mod sections;
pub mod stub;

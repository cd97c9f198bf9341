//! Test boots: a signed UKI or ISO booted in OVMF with Secure Boot enforced
//! (and a TPM when asked), ending in a verdict — booted with Secure Boot on,
//! refused by the firmware (quoting it), or timed out.

pub mod command;
pub mod machine;
pub mod verdict;

pub use command::{test_boot, TestBootOptions, TestBootReport};
pub use machine::{run, BootMedia, Machine, MachineError, RunResult};
pub use verdict::Verdict;

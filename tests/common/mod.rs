//! Test support shared by the integration tests: oracle tools, our binaries,
//! guest initramfs building and the QEMU/OVMF boot harness.
#![allow(dead_code)]

pub mod der;
pub mod guest;
pub mod images;
pub mod pty;
pub mod qemu;
pub mod registry;
pub mod rootfs;
pub mod softhsm;
pub mod tools;
pub mod uki_guest;

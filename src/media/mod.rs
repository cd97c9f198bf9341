//! Boot media: the FAT ESP image, systemd-boot's loader.conf, the hybrid
//! ISO (xorriso), the `docker save` upgrade artifact, and the checks on
//! names and values that become file names or loader-entry lines.

pub mod container;
pub mod fat;
pub mod iso;
pub mod loader;
pub mod names;

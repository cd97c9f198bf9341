//! Boot media: the FAT ESP image, systemd-boot's loader.conf, the hybrid
//! ISO (xorriso), and the `docker save` upgrade artifact.

pub mod container;
pub mod fat;
pub mod iso;
pub mod loader;

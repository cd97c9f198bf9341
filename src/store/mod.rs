//! Key directories on disk: the file layouts (flat Kairos, hardened
//! repository), the manifest, atomic writing of a whole key set, and
//! importing what users exported from their firmware.

pub mod atomic;
pub mod hardened;
pub mod import;
pub mod keydir;
pub mod layout;
pub mod manifest;
pub mod signing;
pub mod write;

pub use keydir::{KeyBackend, KeyDir, Unlock};
pub use layout::Role;
pub use manifest::Manifest;

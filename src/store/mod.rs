//! Key directories on disk: the file layout, the manifest, atomic writing of a
//! whole key set, and importing what users exported from their firmware.

pub mod atomic;
pub mod import;
pub mod layout;
pub mod manifest;
pub mod signing;

pub use layout::Role;
pub use manifest::Manifest;

//! PE/COFF: header parsing, appending sections (UKI assembly), and
//! Authenticode digests and signatures.

pub mod append;
pub mod authenticode;
pub mod image;

pub use append::{append_sections, NewSection};
pub use image::{PeError, PeLayout, Section};

//! PE/COFF: the one PE reader of the crate (header parsing over a
//! bounds-checked reader), appending sections (UKI assembly), and
//! Authenticode digests and signatures.

pub mod append;
pub mod authenticode;
pub mod image;
pub mod reader;

pub use append::{append_sections, append_sections_with, AppendOptions, NewSection};
pub use image::{AlignmentReport, PeError, PeLayout, Section, SectionContent};

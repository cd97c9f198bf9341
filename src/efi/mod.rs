//! EFI formats: GUIDs, `EFI_TIME`, signature lists and databases,
//! authenticated variables, and the Microsoft certificates sbkit ships.
//!
//! Pure byte formats: nothing here reads files or knows about the CLI.

pub mod authvar;
pub mod eventlog;
pub mod guid;
pub mod microsoft;
pub mod siglist;
pub mod time;
pub mod varstore;

pub use authvar::AuthenticatedVariable;
pub use guid::Guid;
pub use siglist::{SignatureDatabase, SignatureEntry, SignatureList};
pub use time::EfiTime;

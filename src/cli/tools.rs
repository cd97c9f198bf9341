//! The suite's tools by name, each with its clap command: the one grammar
//! the binaries parse with, the launcher translates with, and man pages and
//! completions are generated from.

use clap::{Args, Command};

use crate::cli::sbkit::args::LaunchFlags;
use crate::cli::test_boot::TestBootArgs;

/// The tools the launcher runs in containers.
pub const TOOLS: [&str; 4] = ["genkey", "build-uki", "enroll", "test-boot"];

/// The clap command of `tool`; `None` for a name that is not one of [`TOOLS`].
/// `test-boot` is sbkit's subcommand: its command holds the launcher's own
/// flags too, since they may follow the subcommand.
pub fn command(tool: &str) -> Option<Command> {
    Some(match tool {
        "genkey" => crate::cli::genkey::command(),
        "build-uki" => crate::cli::build_uki::command(),
        "enroll" => crate::cli::enroll::command(),
        "test-boot" => crate::cli::path_arg::with_hints(LaunchFlags::augment_args(
            TestBootArgs::augment_args(Command::new("test-boot")),
        )),
        _ => return None,
    })
}

/// The binaries and their commands, for man pages and completions.
pub fn binaries() -> Vec<(&'static str, Command)> {
    vec![
        ("genkey", crate::cli::genkey::command()),
        ("build-uki", crate::cli::build_uki::command()),
        ("enroll", crate::cli::enroll::command()),
        ("sbkit", crate::cli::sbkit::command()),
    ]
}

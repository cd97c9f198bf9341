//! The `sbkit` launcher's own command line. The tools' arguments after
//! `sbkit genkey|build-uki|enroll` are kept as typed and parsed with the
//! tool's own grammar (`cli::tools`), so they are not repeated here.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::cli::test_boot::TestBootArgs;

/// sbkit: keys, signed UKIs and ISOs, enrollment — and test boots to prove them.
#[derive(Parser, Debug)]
#[command(name = "sbkit", version)]
pub struct SbkitArgs {
    /// How tools are run.
    #[command(flatten)]
    pub launch: LaunchFlags,

    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
}

/// The launcher's flags, valid before or after the subcommand.
#[derive(clap::Args, Debug, Clone, Copy, Default)]
pub struct LaunchFlags {
    /// Run tools directly on this host instead of in their containers.
    #[arg(long, global = true)]
    pub native: bool,

    /// Give the container the token: the host's pcscd socket, else the
    /// token's own USB device (automatic when an argument is a pkcs11: URI).
    #[arg(long, global = true)]
    pub token: bool,
}

/// sbkit's subcommands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Boot a UKI (.efi) or ISO in OVMF with Secure Boot enforced and our keys enrolled; exit 0 when it booted with Secure Boot on, 1 booted without, 2 refused, 3 timed out.
    TestBoot(TestBootArgs),
    /// Build the suite's images from docker-bake.hcl.
    Images {
        /// What to do with the images.
        #[command(subcommand)]
        action: ImagesCmd,
    },
    /// Check what this host offers: engine, images, buildx, tokens, KVM.
    Doctor {
        /// JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Run genkey (see genkey --help).
    #[command(disable_help_flag = true)]
    Genkey {
        /// Arguments for genkey.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run build-uki (see build-uki --help).
    #[command(name = "build-uki", disable_help_flag = true)]
    BuildUki {
        /// Arguments for build-uki.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run enroll (see enroll --help).
    #[command(disable_help_flag = true)]
    Enroll {
        /// Arguments for enroll.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Write the man pages and shell completions (bash, zsh, fish) of every tool.
    #[command(hide = true)]
    Generate {
        /// Directory to write share/man/man1, bash-completion, zsh and fish files under.
        dir: PathBuf,
    },
}

/// `sbkit images …`
#[derive(Subcommand, Debug)]
pub enum ImagesCmd {
    /// Build targets or groups of docker-bake.hcl (default: the default group).
    Build {
        /// Targets or groups.
        targets: Vec<String>,
        /// The bake file.
        #[arg(long, default_value = "docker-bake.hcl")]
        bake: PathBuf,
        /// Image tag (the bake file's TAG variable).
        #[arg(long)]
        tag: Option<String>,
        /// Base image (the BASE variable; default: sbkit-base:bookworm when the engine has it).
        #[arg(long)]
        base: Option<String>,
        /// Use the engine's build API even when docker buildx is present.
        #[arg(long = "no-buildx")]
        no_buildx: bool,
        /// Print the resolved targets as JSON and build nothing.
        #[arg(long)]
        print: bool,
    },
}

//! `sbkit`: the host launcher. `test-boot` boots signed media in OVMF with
//! Secure Boot enforced and gives a verdict; `genkey`, `build-uki` and
//! `enroll` run the suite's tools (with `--native`, the binaries next to this one).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sbkit::testboot::{test_boot, TestBootOptions};

/// sbkit: keys, signed UKIs and ISOs, enrollment — and test boots to prove them.
#[derive(Parser, Debug)]
#[command(name = "sbkit", version)]
struct Args {
    /// Run tools directly on this host instead of in their containers.
    #[arg(long, global = true)]
    native: bool,

    /// Give the container the token: the host's pcscd socket, or USB passthrough
    /// (automatic when an argument is a pkcs11: URI).
    #[arg(long, global = true)]
    token: bool,

    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Boot a UKI (.efi) or ISO in OVMF with Secure Boot enforced and our keys enrolled; exit 0 when it booted with Secure Boot on, 1 booted without, 2 refused, 3 timed out.
    TestBoot {
        /// The .iso or .efi to boot.
        media: PathBuf,
        /// Key directory (from genkey) to enroll.
        #[arg(short, long)]
        keys: PathBuf,
        /// Start in setup mode (no keys), e.g. for systemd-boot's auto-enroll.
        #[arg(long = "setup-mode")]
        setup_mode: bool,
        /// Attach a TPM 2.0 (swtpm).
        #[arg(long)]
        tpm: bool,
        /// Seconds before giving up.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Text that must appear on the console before the boot counts.
        #[arg(long)]
        expect: Option<String>,
        /// Stream the serial console to stderr.
        #[arg(long)]
        console: bool,
        /// Keep the serial log here.
        #[arg(long = "serial-log")]
        serial_log: Option<PathBuf>,
        /// The report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Build the suite's images from docker-bake.json.
    Images {
        #[command(subcommand)]
        action: ImagesCmd,
    },
    /// Check what this host offers: engine, images, buildx, tokens, KVM.
    Doctor {
        /// JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Run genkey.
    #[command(disable_help_flag = true)]
    Genkey {
        /// Arguments for genkey.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run build-uki.
    #[command(name = "build-uki", disable_help_flag = true)]
    BuildUki {
        /// Arguments for build-uki.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run enroll.
    #[command(disable_help_flag = true)]
    Enroll {
        /// Arguments for enroll.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ImagesCmd {
    /// Build targets or groups of docker-bake.json (default: the default group).
    Build {
        /// Targets or groups.
        targets: Vec<String>,
        /// The bake file.
        #[arg(long, default_value = "docker-bake.json")]
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
    },
}

fn images_build(
    targets: Vec<String>,
    bake: PathBuf,
    tag: Option<String>,
    base: Option<String>,
    no_buildx: bool,
) -> anyhow::Result<ExitCode> {
    use sbkit::launcher::images;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let docker = sbkit::launcher::engine::connect().await?;
        let mut overrides = std::collections::BTreeMap::new();
        if let Some(t) = tag {
            overrides.insert("TAG".to_string(), t);
        }
        match base {
            Some(b) => {
                overrides.insert("BASE".to_string(), b);
            }
            None if std::env::var_os("BASE").is_none()
                && docker.inspect_image(images::OFFLINE_BASE).await.is_ok() =>
            {
                overrides.insert("BASE".to_string(), images::OFFLINE_BASE.to_string());
            }
            None => {}
        }
        if std::env::var_os("VERSION").is_none() {
            overrides.insert("VERSION".to_string(), env!("CARGO_PKG_VERSION").to_string());
        }
        let resolved = images::resolve(&bake, &targets, &overrides)?;
        if images::have_buildx() && !no_buildx {
            let mut cmd = std::process::Command::new("docker");
            cmd.args(["buildx", "bake", "-f"]).arg(&bake).args(&targets);
            for (k, v) in &overrides {
                cmd.env(k, v);
            }
            let status = cmd.status().context("running docker buildx bake")?;
            return Ok(ExitCode::from(
                status.code().unwrap_or(1).clamp(0, 255) as u8
            ));
        }
        let bars = sbkit::cli::multi_progress(false);
        for t in &resolved {
            let bar = bars.add(sbkit::cli::spinner(false));
            bar.set_message(format!("{}: sending context", t.name));
            let name = t.name.clone();
            let progress = bar.clone();
            images::build_with_engine(&docker, t, &mut move |line| {
                progress.set_message(format!("{name}: {line}"))
            })
            .await?;
            bar.finish_and_clear();
            eprintln!("built {} ({})", t.name, t.tags.join(", "));
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn run_native(tool: &str, args: &[String]) -> anyhow::Result<ExitCode> {
    let me = std::env::current_exe().context("locating the sbkit binary")?;
    let dir = me.parent().context("the sbkit binary has no directory")?;
    let bin = dir.join(tool);
    let status = std::process::Command::new(&bin)
        .args(args)
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    Ok(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8
    ))
}

/// Runs `sbkit --native test-boot …` inside the sbkit-qemu image (QEMU, OVMF,
/// swtpm and the sbkit and enroll binaries), with the media and keys mounted.
fn run_test_boot_container(all_args: Vec<String>) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    // Everything after the `test-boot` word, minus launcher-only flags.
    let pos = all_args
        .iter()
        .position(|a| a == "test-boot")
        .context("no test-boot in the arguments")?;
    let args: Vec<String> = all_args[pos + 1..].to_vec();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let docker = sbkit::launcher::engine::connect().await?;
        let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
        let mut spec = sbkit::launcher::plan(
            "test-boot",
            &args,
            &sbkit::launcher::current_dir(),
            false,
            tty,
        );
        spec.image = sbkit::launcher::image_for("sbkit-qemu");
        let mut cmd = vec![
            "/usr/local/bin/sbkit".to_string(),
            "--native".into(),
            "test-boot".into(),
        ];
        cmd.extend(spec.args.clone());
        spec.entrypoint = Some(cmd);
        spec.args = Vec::new();
        let code = sbkit::launcher::run::run(&docker, &spec).await?;
        Ok(ExitCode::from(code.clamp(0, 255) as u8))
    })
}

/// Runs a tool in its container through the engine API.
fn run_container(tool: &str, mut args: Vec<String>, token: bool) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let docker = sbkit::launcher::engine::connect().await?;
        let scratch = tempfile::Builder::new().prefix("sbkit-launch-").tempdir()?;
        if tool == "build-uki" {
            if let Some(source) = args.iter().position(|a| !a.starts_with('-')) {
                if args[source] != "inspect" {
                    if let Some(replacement) =
                        sbkit::launcher::export_local_image(&docker, &args[source], scratch.path())
                            .await?
                    {
                        eprintln!(
                            "{} exists only in the local engine: exported for build-uki",
                            args[source]
                        );
                        args[source] = replacement;
                    }
                }
            }
        }
        let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
        let spec = sbkit::launcher::plan(tool, &args, &sbkit::launcher::current_dir(), token, tty);
        let code = sbkit::launcher::run::run(&docker, &spec).await?;
        Ok(ExitCode::from(code.clamp(0, 255) as u8))
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Cmd::TestBoot { .. } if !args.native => {
            run_test_boot_container(std::env::args().skip(1).collect())
        }
        Cmd::TestBoot {
            media,
            keys,
            setup_mode,
            tpm,
            timeout,
            expect,
            console,
            serial_log,
            json,
        } => (|| {
            let mut opts = TestBootOptions::new(media, keys);
            opts.setup_mode = setup_mode;
            opts.tpm = tpm;
            opts.timeout = Duration::from_secs(timeout);
            opts.expect = expect;
            opts.serial_log = serial_log;
            let spinner = sbkit::cli::spinner(console || json);
            let report = test_boot(&opts, &mut |line, stage| {
                if console {
                    eprintln!("{line}");
                } else {
                    spinner.set_message(format!("booting: {stage}"));
                }
            });
            spinner.finish_and_clear();
            let report = report.context("test boot failed to run")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{}: {} ({:.0} s)",
                    report.media.display(),
                    report.result.verdict.describe(),
                    report.result.seconds
                );
            }
            Ok(ExitCode::from(report.result.verdict.exit_code()))
        })(),
        Cmd::Images {
            action:
                ImagesCmd::Build {
                    targets,
                    bake,
                    tag,
                    base,
                    no_buildx,
                },
        } => images_build(targets, bake, tag, base, no_buildx),
        Cmd::Doctor { json } => (|| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let checks = rt.block_on(sbkit::launcher::doctor::run());
            if json {
                println!("{}", serde_json::to_string_pretty(&checks)?);
            } else {
                for c in &checks {
                    println!("{:<4} {:<28} {}", c.status, c.what, c.detail);
                }
            }
            Ok(ExitCode::from(
                if checks.iter().any(|c| !c.ok && c.what == "Docker engine") {
                    1
                } else {
                    0
                },
            ))
        })(),
        Cmd::Genkey { args: a } if !args.native => run_container("genkey", a, args.token),
        Cmd::BuildUki { args: a } if !args.native => run_container("build-uki", a, args.token),
        Cmd::Enroll { args: a } if !args.native => run_container("enroll", a, args.token),
        Cmd::Genkey { args } => run_native("genkey", &args),
        Cmd::BuildUki { args } => run_native("build-uki", &args),
        Cmd::Enroll { args } => run_native("enroll", &args),
    };
    match result {
        Ok(code) => code,
        Err(e) => sbkit::cli::fail(&e),
    }
}

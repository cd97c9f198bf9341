//! The `sbkit` binary: the launcher's grammar ([`args`]) and its run.
//! `test-boot` boots signed media in OVMF with Secure Boot enforced and
//! gives a verdict; `genkey`, `build-uki` and `enroll` run the suite's tools
//! in their containers (with `--native`, the binaries next to this one).

pub mod args;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};

pub use args::{Cmd, ImagesCmd, LaunchFlags, SbkitArgs};

/// sbkit's clap command, with completion hints from the path marks.
pub fn command() -> clap::Command {
    crate::cli::path_arg::with_hints(SbkitArgs::command())
}

fn images_build(
    targets: Vec<String>,
    bake: PathBuf,
    tag: Option<String>,
    base: Option<String>,
    no_buildx: bool,
    print: bool,
) -> anyhow::Result<ExitCode> {
    use crate::launcher::images;
    let mut overrides = std::collections::BTreeMap::new();
    if let Some(t) = tag {
        overrides.insert("TAG".to_string(), t);
    }
    if std::env::var_os("VERSION").is_none() {
        overrides.insert("VERSION".to_string(), env!("CARGO_PKG_VERSION").to_string());
    }
    if print {
        if let Some(b) = base {
            overrides.insert("BASE".to_string(), b);
        }
        let resolved = images::resolve(&bake, &targets, &overrides)?;
        println!(
            "{}",
            serde_json::to_string_pretty(&images::print_form(&resolved))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let docker = crate::engine::connect().await?;
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
        let resolved = images::resolve(&bake, &targets, &overrides)?;
        // The containerfiles install man pages and completions from here.
        let share = bake
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("target/release/share");
        crate::cli::docs::generate(&share)?;
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
        let bars = crate::cli::multi_progress(false);
        for t in &resolved {
            let bar = bars.add(crate::cli::spinner(false));
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
    // Everything after the `test-boot` word (sbkit's own flags before it take no values).
    let pos = all_args
        .iter()
        .position(|a| !a.starts_with('-'))
        .filter(|&p| all_args[p] == "test-boot")
        .context("no test-boot in the arguments")?;
    let args: Vec<String> = all_args[pos + 1..].to_vec();
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let mut spec = crate::launcher::plan(
        "test-boot",
        &args,
        &crate::launcher::current_dir(),
        false,
        tty,
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let docker = crate::engine::connect().await?;
        spec.image = crate::launcher::image_for("sbkit-qemu");
        let mut cmd = vec![
            "/usr/local/bin/sbkit".to_string(),
            "--native".into(),
            "test-boot".into(),
        ];
        cmd.extend(spec.args.clone());
        spec.entrypoint = Some(cmd);
        spec.args = Vec::new();
        let code = crate::launcher::run::run(&docker, &spec).await?;
        Ok(ExitCode::from(code.clamp(0, 255) as u8))
    })
}

/// Runs a tool in its container through the engine API.
fn run_container(tool: &str, mut args: Vec<String>, token: bool) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    let cwd = crate::launcher::current_dir();
    // Parsed with the tool's grammar before the engine is asked anything.
    let first = crate::launcher::paths::translate(tool, &args, &cwd, None)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let docker = crate::engine::connect().await?;
        let scratch = tempfile::Builder::new().prefix("sbkit-launch-").tempdir()?;
        if tool == "build-uki" && first.subcommand.is_empty() {
            let source = first
                .values
                .iter()
                .find(|v| v.kind == crate::cli::path_arg::PathKind::Source && !v.is_path);
            if let Some(source) = source {
                if let Some(replacement) =
                    crate::launcher::export_local_image(&docker, &source.value, scratch.path())
                        .await?
                {
                    eprintln!(
                        "{} exists only in the local engine: exported for build-uki",
                        source.value
                    );
                    let token = &mut args[source.token];
                    let head = token.len() - source.value.len();
                    token.truncate(head);
                    token.push_str(&replacement);
                }
            }
        }
        let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
        let spec = crate::launcher::plan(tool, &args, &cwd, token, tty)?;
        let code = crate::launcher::run::run(&docker, &spec).await?;
        Ok(ExitCode::from(code.clamp(0, 255) as u8))
    })
}
/// Shows a launcher error: a grammar error exactly as clap shows it (with
/// its exit code), anything else as sbkit's error line.
fn fail(e: anyhow::Error) -> ExitCode {
    use crate::launcher::paths::TranslateError;
    use crate::launcher::LaunchError;
    let grammar =
        e.downcast_ref::<TranslateError>()
            .or_else(|| match e.downcast_ref::<LaunchError>() {
                Some(LaunchError::Translate(t)) => Some(t),
                _ => None,
            });
    if let Some(TranslateError::Grammar(g)) = grammar {
        let _ = g.print();
        return ExitCode::from(g.exit_code().clamp(0, 255) as u8);
    }
    crate::cli::fail(&e)
}

/// The binary's `main`.
pub fn main() -> ExitCode {
    let matches = command().get_matches();
    let args = match SbkitArgs::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let native = args.launch.native;
    let token = args.launch.token;
    let result = match args.command {
        // A test boot signs nothing: a token given to it would be a mistake
        // (a key meant for build-uki), so it is refused rather than ignored.
        Cmd::TestBoot(_) if token => Err(anyhow::anyhow!(
            "--token gives a container the signing token, and test-boot signs nothing; drop --token (sign with sbkit build-uki --token …, then test-boot the result)"
        )),
        Cmd::TestBoot(_) if !native => run_test_boot_container(std::env::args().skip(1).collect()),
        Cmd::TestBoot(t) => crate::cli::test_boot::run_native(t),
        Cmd::Images {
            action:
                ImagesCmd::Build {
                    targets,
                    bake,
                    tag,
                    base,
                    no_buildx,
                    print,
                },
        } => images_build(targets, bake, tag, base, no_buildx, print),
        Cmd::Doctor { json } => (|| {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let checks = rt.block_on(crate::launcher::doctor::run());
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
        Cmd::Generate { dir } => crate::cli::docs::generate(&dir)
            .map(|written| {
                eprintln!("wrote {} files under {}", written.len(), dir.display());
                ExitCode::SUCCESS
            })
            .map_err(anyhow::Error::from),
        Cmd::Genkey { args: a } if !native => run_container("genkey", a, token),
        Cmd::BuildUki { args: a } if !native => run_container("build-uki", a, token),
        Cmd::Enroll { args: a } if !native => run_container("enroll", a, token),
        Cmd::Genkey { args } => run_native("genkey", &args),
        Cmd::BuildUki { args } => run_native("build-uki", &args),
        Cmd::Enroll { args } => run_native("enroll", &args),
    };
    match result {
        Ok(code) => code,
        Err(e) => fail(e),
    }
}

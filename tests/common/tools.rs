//! Finding the independent oracle tools and running our binaries.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The cache of test assets and the Python venv (`SBKIT_CACHE` or `.cache`).
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("SBKIT_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => repo_root().join(".cache"),
    }
}

/// Script that installs every tool the tests need.
pub const INSTALL_SCRIPT: &str = "scripts/install-deps.sh";

/// Path of an external tool: `<cache>/venv/bin` first (virt-fw-vars lives
/// there), then `PATH`, then the sbin directories.
///
/// A missing tool fails the test (never a silent skip): under `CI=true` the
/// message says CI's install step is broken, elsewhere it names the script to run.
pub fn require_tool(name: &str) -> PathBuf {
    let direct = Path::new(name);
    if direct.is_absolute() && direct.is_file() {
        return direct.to_path_buf();
    }
    let mut dirs = vec![cache_dir().join("venv/bin")];
    if let Some(paths) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&paths));
    }
    dirs.extend(["/usr/sbin", "/sbin"].map(PathBuf::from));
    if let Some(found) = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()) {
        return found;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("required tool `{name}` is missing on the CI machine: .ci/run must run {INSTALL_SCRIPT} before the tests");
    }
    panic!("required tool `{name}` is missing: run {INSTALL_SCRIPT} (tests never skip)");
}

/// A command for one of our binaries.
pub fn our_bin(name: &str) -> Command {
    let path = match name {
        "genkey" => env!("CARGO_BIN_EXE_genkey"),
        "build-uki" => env!("CARGO_BIN_EXE_build-uki"),
        "enroll" => env!("CARGO_BIN_EXE_enroll"),
        "sbkit" => env!("CARGO_BIN_EXE_sbkit"),
        other => panic!("no binary {other}"),
    };
    let mut c = Command::new(path);
    c.env_remove("SOURCE_DATE_EPOCH");
    c
}

/// Runs a command and returns its output, panicking with both streams on failure.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command that must fail; returns its stderr.
pub fn run_fails(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        !out.status.success(),
        "{cmd:?} succeeded but should have failed:\nstdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Both output streams of a finished command, stdout first, for messages
/// that may land on either.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A command's stdout as JSON, panicking with both streams when it is not.
pub fn json_stdout(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", output_text(out)))
}

/// `genkey NAME -o DIR` plus extra arguments.
pub fn genkey(name: &str, dir: &Path, extra: &[&str]) -> Output {
    run_ok(our_bin("genkey").arg(name).arg("-o").arg(dir).args(extra))
}

/// The owner GUID recorded in a key directory's manifest.
pub fn owner_guid(dir: &Path) -> String {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest.json"))
            .expect("manifest is JSON");
    m["owner_guid"].as_str().expect("owner_guid").to_string()
}

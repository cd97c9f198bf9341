//! `sbkit doctor`: what this host offers the suite — the engine and its
//! version, the images and their versions, buildx, tokens, KVM, QEMU/OVMF.

use std::path::Path;

use serde::Serialize;

use super::image_for;

/// One check.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// What was checked.
    pub what: String,
    /// Whether it is fine.
    pub ok: bool,
    /// `ok`, `warn` (works, with a limit) or `fail`.
    pub status: &'static str,
    /// What was found, or what to do.
    pub detail: String,
}

fn check(what: &str, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        what: what.into(),
        ok,
        status: if ok { "ok" } else { "fail" },
        detail: detail.into(),
    }
}

/// A check that does not stop anything when it fails, only limits it.
fn advisory(what: &str, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        status: if ok { "ok" } else { "warn" },
        ..check(what, ok, detail)
    }
}

/// The tool images the launcher runs.
pub const IMAGES: [&str; 4] = ["genkey", "build-uki", "enroll", "sbkit-qemu"];

/// Runs every check.
pub async fn run() -> Vec<Check> {
    let mut out = Vec::new();
    match crate::engine::connect().await {
        Ok(docker) => {
            let version = docker.version().await.ok();
            out.push(check(
                "Docker engine",
                true,
                format!(
                    "{} (engine {}, API {}, using API {})",
                    crate::engine::endpoint(),
                    version
                        .as_ref()
                        .and_then(|v| v.version.clone())
                        .unwrap_or_default(),
                    version
                        .as_ref()
                        .and_then(|v| v.api_version.clone())
                        .unwrap_or_default(),
                    docker.client_version()
                ),
            ));
            for tool in IMAGES {
                let image = image_for(tool);
                match docker.inspect_image(&image).await {
                    Ok(i) => {
                        let label = i
                            .config
                            .and_then(|c| c.labels)
                            .and_then(|l| l.get("org.opencontainers.image.version").cloned())
                            .unwrap_or_else(|| "no version label".into());
                        let created = i.created.map(|c| c.to_string()).unwrap_or_default();
                        out.push(check(
                            &format!("image {image}"),
                            true,
                            format!("version {label}, created {created}"),
                        ));
                    }
                    Err(_) => out.push(check(
                        &format!("image {image}"),
                        false,
                        "missing: sbkit images build",
                    )),
                }
            }
        }
        Err(e) => out.push(check("Docker engine", false, e.to_string())),
    }
    let buildx = std::process::Command::new("docker")
        .args(["buildx", "version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    out.push(advisory(
        "docker buildx",
        buildx,
        if buildx {
            "present: images build through docker buildx bake"
        } else {
            "absent: images build through the engine's build API"
        },
    ));
    let pcscd = Path::new("/run/pcscd/pcscd.comm").exists();
    let usb = std::fs::read_dir("/dev/bus/usb")
        .map(|d| d.count())
        .unwrap_or(0);
    out.push(advisory(
        "smart cards / tokens",
        pcscd || usb > 0,
        match (pcscd, usb) {
            (true, _) => "host pcscd socket found: containers get /run/pcscd".to_string(),
            (false, n) if n > 0 => format!("{n} USB buses: containers get USB passthrough"),
            _ => "no pcscd socket and no /dev/bus/usb: token operations cannot reach a YubiKey"
                .to_string(),
        },
    ));
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    out.push(advisory(
        "KVM",
        kvm,
        if kvm { "available (test boots still default to TCG: Secure Boot's SMM often fails under KVM in containers; set SBKIT_QEMU_ACCEL=kvm to try)" } else { "not available: test boots run under TCG (about 10 s per kernel boot)" },
    ));
    for (what, path) in [
        (
            "OVMF (native test boots)",
            crate::testboot::machine::OVMF_CODE,
        ),
        ("QEMU (native test boots)", "/usr/bin/qemu-system-x86_64"),
    ] {
        let found = Path::new(path).exists();
        out.push(check(
            what,
            found,
            if found {
                path.to_string()
            } else {
                format!("{path} missing: use the sbkit-qemu image or install it")
            },
        ));
    }
    out
}

//! The firmware judges build-uki's UKIs: OVMF with Secure Boot enforced and
//! our PK/KEK/db enrolled boots ours (and the TPM's PCR 11 equals our
//! prediction), and refuses an unsigned UKI and one signed by another key.
//!
//! Both stubs of the default matrix boot: Debian bookworm's systemd 252
//! (SectionAlignment 0x200, sections we add on 4 KiB pages anyway) and 254.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::guest::Assets;
use common::qemu::{self, BootOutcome, BootSpec, Firmware, Media, Tpm};
use common::rootfs::{busybox_rootfs, MARKER_INIT};
use common::tools::{genkey, our_bin, run_ok};
use common::uki_guest::{assert_refused, strip_signature};

/// The stubs every test here runs over.
const STUBS: [u32; 2] = [252, 254];

fn stub(generation: u32) -> PathBuf {
    Assets::locate().stub(generation)
}

/// build-uki dir:ROOT -t uki into `out` with `keys` on the stub of one
/// systemd generation; returns the JSON report.
fn build_on(generation: u32, root: &Path, keys: &Path, out: &Path) -> serde_json::Value {
    let o = run_ok(
        our_bin("build-uki")
            .arg(format!("dir:{}", root.display()))
            .args([
                "-t",
                "uki",
                "--json",
                "--cmdline",
                "console=ttyS0 panic=-1",
                "-d",
            ])
            .arg(out)
            .arg("-k")
            .arg(keys)
            .arg("--stub")
            .arg(stub(generation)),
    );
    serde_json::from_slice(&o.stdout).expect("--json report")
}

/// Boots `efi` as the removable-media loader of an ESP.
fn boot_efi(work: &Path, name: &str, efi: &[u8], vars: &Path, tpm: bool) -> BootOutcome {
    let esp = work.join(format!("esp-{name}"));
    fs::create_dir_all(esp.join("EFI/BOOT")).unwrap();
    fs::write(esp.join("EFI/BOOT/BOOTX64.EFI"), efi).unwrap();
    let run_vars = work.join(format!("vars-{name}.fd"));
    fs::copy(vars, &run_vars).unwrap();
    let serial = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("uki_boot.{name}.serial.log"));
    let mut spec = BootSpec::new(
        Firmware::ovmf_secboot(),
        &run_vars,
        Media::EspDir(esp),
        &serial,
    );
    if tpm {
        let state = work.join(format!("tpm-{name}"));
        fs::create_dir_all(&state).unwrap();
        spec.tpm = Some(Tpm { state_dir: state });
    }
    qemu::boot(&spec)
}

#[test]
fn ovmf_boots_our_signed_uki_with_the_predicted_pcr11_and_refuses_others() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let keys = w.join("keys");
    genkey("Acme Corp", &keys, &[]);
    let root = w.join("rootfs");
    busybox_rootfs(&root, MARKER_INIT);
    let vars = common::uki_guest::enrolled_store(w, &keys);
    let mut signed = Vec::new();
    for generation in STUBS {
        let out = w.join(format!("build{generation}"));
        let report = build_on(generation, &root, &keys, &out);
        let efi = fs::read(out.join("norole.efi")).unwrap();
        let predicted = report["entries"][0]["pcr11"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p[0] == "sha256")
            .map(|p| p[1].as_str().unwrap().to_uppercase())
            .expect("sha256 prediction in the report");
        let started = std::time::Instant::now();
        let ours = boot_efi(w, &format!("signed{generation}"), &efi, &vars, true);
        eprintln!(
            "uki_boot: stub {generation} signed UKI booted in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        ours.assert_success();
        let pcr = ours.value("SBKIT-PCR", "pcr11").unwrap_or_default();
        assert_eq!(
            pcr.to_uppercase(),
            predicted,
            "stub {generation}: PCR 11 read by the guest (left) differs from build-uki's prediction (right)\n{ours}"
        );
        assert!(
            ours.log
                .contains("SBKIT-BOOT cmdline=console=ttyS0_panic=-1"),
            "stub {generation}: the guest runs with the UKI's .cmdline\n{ours}"
        );
        signed.push(efi);
    }
    let efi = signed.pop().unwrap();

    // The same UKI, signed by another key set's db key: refused.
    let other = w.join("other");
    genkey("Other Corp", &other, &[]);
    build_on(252, &root, &other, &w.join("build-other"));
    let foreign = fs::read(w.join("build-other/norole.efi")).unwrap();
    assert_refused(
        &boot_efi(w, "foreign", &foreign, &vars, false),
        "a UKI signed by another key",
    );

    // Unsigned: the signed image with its certificate table removed.
    let unsigned = strip_signature(&efi);
    assert_refused(
        &boot_efi(w, "unsigned", &unsigned, &vars, false),
        "an unsigned UKI",
    );
}

#[test]
fn build_uki_output_satisfies_the_offline_verifiers() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let keys = w.join("keys");
    genkey("Acme Corp", &keys, &[]);
    let root = w.join("rootfs");
    busybox_rootfs(&root, MARKER_INIT);
    for generation in STUBS {
        let out = w.join(format!("build{generation}"));
        build_on(generation, &root, &keys, &out);
        let efi = out.join("norole.efi");
        run_ok(
            std::process::Command::new(qemu::require_tool("sbverify"))
                .arg("--cert")
                .arg(keys.join("db.pem"))
                .arg(&efi),
        );
        run_ok(
            std::process::Command::new(qemu::require_tool("osslsigncode"))
                .args(["verify", "-in"])
                .arg(&efi)
                .arg("-CAfile")
                .arg(keys.join("db.pem")),
        );
    }
}

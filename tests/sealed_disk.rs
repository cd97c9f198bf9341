//! Trusted Boot proven end to end: a LUKS2 volume sealed with systemd's signed PCR
//! policy to our PCR key unlocks in a real systemd guest booted from a UKI that our
//! `build-uki` made, and stays locked when it must.
//!
//! Real parts only: the guest is a debootstrapped Debian bookworm (systemd 252,
//! libcryptsetup, the TPM2 libraries systemd loads) packed whole into the UKI's
//! initrd (the Kairos model: no `/etc/initrd-release`, systemd runs in host mode),
//! booted by OVMF with Secure Boot enforced (our keys enrolled) and swtpm. The volume
//! is made by `cryptsetup luksFormat` on a file and enrolled by systemd's own
//! `systemd-cryptenroll --tpm2-public-key=<our tpm2-pcr-public.pem>
//! --tpm2-public-key-pcrs=11` on the host, against the guest's swtpm state through
//! tss2's swtpm TCTI (the sealed object hangs off the TPM's storage primary seed,
//! which lives in that state directory). The guest unlocks it with
//! `systemd-cryptsetup attach … tpm2-device=auto,headless=1` — no passphrase, no
//! key file — at three points of its boot, each reported on the serial console
//! with the guest's PCR 11:
//!
//! - `early`: before `sysinit.target`, where crypttab volumes are unlocked. PCR 11 is
//!   the stub's measurement alone; build-uki signs the empty path for this boot
//!   model so that it matches: unlocks.
//! - `sysinit`: after systemd-pcrphase measured `sysinit`: signed, unlocks.
//! - `ready`: after `ready` was measured: `sysinit:ready` is signed, unlocks.
//!
//! Four boots, one swtpm state and one volume:
//!
//! | boot | stub | db key | `.pcrsig` | command line | expected |
//! |------|------|--------|-----------|--------------|----------|
//! | `ours-252` | 252 | ours | ours | A | unlocks (early, sysinit, ready) |
//! | `ours-254-cmdline` | 254 | ours | ours | B | unlocks: the policy is signed, not bound to one image |
//! | `other-pcr-key` | 254 | ours | another PCR key's | C | locked |
//! | `no-pcrsig` | 252 | ours | none | D | locked, booted by `sbkit test-boot --disk --tpm-state` |
//!
//! The first three boots use the test harness (tests/common/qemu.rs); the last goes
//! through the product, whose verdict must be "booted with Secure Boot on".
//! Every stage's PCR 11 is compared with build-uki's prediction extended by the
//! phase words (for the UKI without a PCR key, which build-uki does not predict, the
//! library's prediction over the finished UKI), and the unlocked volume's first
//! sector must read back the text the host encrypted into it with the volume key.
//! systemd 252 never looks in `/.extra` for the signature (its binaries hold no such
//! path), so the guest names `tpm2-signature=/.extra/tpm2-pcr-signature.json`, as a
//! crypttab on such a system has to.
//!
//! The TPM is manufactured by swtpm_setup with only the SHA-256 bank (the firmware
//! and the stub hash the UKI once per active bank, in emulated code), and every boot
//! ends with the guest's own power-off: killing QEMU is a power loss that swtpm
//! counts against its dictionary-attack limit, and after three the unseal fails
//! with "TPM2 device is in dictionary attack lockout mode" (seen).
//!
//! The guest root is built once with debootstrap into `<cache>/sealed-guest/` (a few
//! minutes, network from the host's Debian mirror) and reused while the package
//! list and the kernel stay the same. Needs root (debootstrap, chroot),
//! debootstrap, cryptsetup, systemd-cryptenroll with libtss2-tcti-swtpm, swtpm and
//! swtpm_setup, openssl, QEMU, OVMF and virt-fw-vars (scripts/install-deps.sh), and the boot
//! assets (scripts/fetch-assets.sh). Nothing skips.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use sbkit::keys::algorithm::DigestAlgorithm;
use sbkit::uki::pcr::{predict_uki, PhasePath};
use sha2::{Digest, Sha256};

use common::guest::{cache_dir, Assets};
use common::qemu::{self, BootOutcome, BootSpec, Firmware, Media, Tpm};
use common::tools::{genkey, our_bin, require_tool, run_ok};
use common::uki_guest::enrolled_store;

/// Packages on top of `debootstrap --variant=minbase`: systemd (with
/// systemd-cryptsetup, systemd-cryptenroll and systemd-pcrphase in bookworm), kmod
/// for the kernel modules, and the TPM2 libraries systemd loads at run time.
const GUEST_PACKAGES: &str =
    "systemd,udev,kmod,libcryptsetup12,libtss2-esys-3.0.2-0,libtss2-rc0,libtss2-mu0,libtss2-tcti-device0";

/// Bumped when the way the guest root is made changes (part of the cache key).
const GUEST_RECIPE: &str =
    "sealed-guest v2: minbase bookworm + GUEST_PACKAGES, slimmed, dm/virtio/crypto modules";

/// Modules of the fetched kernel the guest needs (with their dependencies, as
/// `modprobe --show-depends` lists them): virtio PCI disks, device-mapper and
/// dm-crypt, the crypto they and libcryptsetup (AF_ALG) use, efivarfs (systemd's
/// PCR phase units check the stub's EFI variable), virtio-rng.
const GUEST_MODULES: [&str; 18] = [
    "kernel/arch/x86/crypto/aesni-intel.ko",
    "kernel/crypto/af_alg.ko",
    "kernel/crypto/algif_hash.ko",
    "kernel/crypto/algif_skcipher.ko",
    "kernel/crypto/cryptd.ko",
    "kernel/crypto/crypto_simd.ko",
    "kernel/crypto/ecb.ko",
    "kernel/crypto/xts.ko",
    "kernel/drivers/block/virtio_blk.ko",
    "kernel/drivers/char/hw_random/virtio-rng.ko",
    "kernel/drivers/md/dm-crypt.ko",
    "kernel/drivers/md/dm-mod.ko",
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_pci.ko",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/fs/efivarfs/efivarfs.ko",
];

/// What the guest does not need at boot: every MB here is hashed several times by
/// the emulated firmware and the stub, so the UKI is kept small.
const GUEST_SLIM: [&str; 12] = [
    "var/cache/apt",
    "var/lib/apt/lists",
    "var/lib/dpkg",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/locale",
    "usr/share/info",
    "usr/lib/udev/hwdb.bin",
    "usr/lib/x86_64-linux-gnu/gconv",
    "usr/lib/x86_64-linux-gnu/perl-base",
    "usr/bin/perl",
    "usr/bin/perl5.36.0",
];

/// One TPM-only unlock attempt of `/dev/vda` at boot stage `$1`, reported as one
/// `SBKIT-SEAL stage=… result=… pcr11=… sig=…` line on the console.
const SEAL_SCRIPT: &str = r#"#!/bin/sh
exec >/dev/console 2>&1
stage=$1
name=sealed-$stage
modprobe -a virtio_pci virtio_blk dm_mod dm_crypt 2>/dev/null
# The sealed volume is the virtio disk with serial sbkit-disk0 (the ESP is another).
dev=
i=0
while [ -z "$dev" ] && [ $i -lt 300 ]; do
  for s in /sys/block/vd*/serial; do
    [ "$(cat "$s" 2>/dev/null)" = sbkit-disk0 ] && dev=/dev/${s#/sys/block/} && dev=${dev%/serial}
  done
  [ -n "$dev" ] || { sleep 0.1; i=$((i+1)); }
done
pcr=$(tr A-F a-f 2>/dev/null </sys/class/tpm/tpm0/pcr-sha256/11 || echo none)
sig=absent
[ -f /.extra/tpm2-pcr-signature.json ] && sig=present
if [ -z "$dev" ]; then
  echo "SBKIT-SEAL stage=$stage result=nodisk pcr11=$pcr sig=$sig"
  exit 0
fi
/lib/systemd/systemd-cryptsetup attach "$name" "$dev" - \
  tpm2-device=auto,tpm2-signature=/.extra/tpm2-pcr-signature.json,headless=1 </dev/null
rc=$?
if [ $rc = 0 ] && [ -b "/dev/mapper/$name" ]; then
  payload=$(head -c 64 "/dev/mapper/$name" | tr -cd 'A-Za-z0-9-')
  echo "SBKIT-SEAL stage=$stage result=unlocked pcr11=$pcr sig=$sig payload=$payload"
  /lib/systemd/systemd-cryptsetup detach "$name"
else
  echo "SBKIT-SEAL stage=$stage result=locked rc=$rc pcr11=$pcr sig=$sig"
fi
"#;

/// Before `sysinit.target`: where crypttab volumes are unlocked in host mode.
const EARLY_UNIT: &str = "[Unit]
Description=sbkit: TPM unlock attempt before the sysinit phase
DefaultDependencies=no
After=systemd-udev-trigger.service systemd-modules-load.service
Before=sysinit.target systemd-pcrphase-sysinit.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/sbkit-seal early
";

/// After systemd-pcrphase measured `sysinit`, before it measures `ready`.
const SYSINIT_UNIT: &str = "[Unit]
Description=sbkit: TPM unlock attempt after the sysinit phase
DefaultDependencies=no
After=systemd-pcrphase-sysinit.service
Before=basic.target systemd-pcrphase.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/sbkit-seal sysinit
";

/// After `ready` was measured; then the end marker and an immediate power-off.
const READY_UNIT: &str = "[Unit]
Description=sbkit: TPM unlock attempt after the ready phase, then power off
After=systemd-pcrphase.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/sbkit-seal ready
ExecStartPost=/bin/sh -c 'echo SBKIT-SEAL-DONE >/dev/console; systemctl poweroff --force --force'
";

/// Printed by the last stage; ends the boot.
const MARK_DONE: &str = "SBKIT-SEAL-DONE";

/// The passphrase of keyslot 0 (the TPM gets keyslot 1); the guest never sees it.
const PASSPHRASE: &str = "sbkit-sealed-passphrase";

/// The plaintext of the volume's first sector, encrypted on the host with the
/// volume key; an unlocked guest reads it back.
const PAYLOAD: &str = "SBKIT-SEALED-PAYLOAD-7f3a";

/// LUKS2 data offset in 512-byte sectors (16 MiB: the default header size, fixed
/// so the host knows where sector 0 of the data is).
const DATA_OFFSET_SECTORS: u64 = 32768;

fn elapsed(start: Instant) -> String {
    format!("{:.1}s", start.elapsed().as_secs_f64())
}

/// The host's Debian mirror (first non-security `URIs:`/`deb` entry in /etc/apt), or
/// deb.debian.org.
fn debian_mirror() -> String {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.to_string_lossy();
                name.ends_with(".sources") || name.ends_with(".list")
            })
            .collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            let uri = line
                .strip_prefix("URIs:")
                .or_else(|| line.strip_prefix("deb "))
                .and_then(|rest| {
                    rest.split_whitespace()
                        .find(|w| w.starts_with("http://") || w.starts_with("https://"))
                });
            if let Some(uri) = uri {
                if uri.contains("debian") && !uri.contains("security") {
                    return uri.to_string();
                }
            }
        }
    }
    "http://deb.debian.org/debian".to_string()
}

/// The guest root: debootstrap + [`GUEST_PACKAGES`], slimmed, with the fetched
/// kernel's modules of [`GUEST_MODULES`] (depmod run in the root) and `/init`. Built once
/// into `<cache>/sealed-guest/root-<key>`; the key covers the recipe and the kernel.
fn guest_root() -> PathBuf {
    let assets = Assets::locate();
    let release = assets.kernel_release();
    let kernel_stamp = fs::read_to_string(assets.dir.join("linux.stamp")).unwrap_or_default();
    let key = hex::encode(
        &Sha256::digest(format!(
            "{GUEST_RECIPE}|{GUEST_PACKAGES}|{GUEST_MODULES:?}|{GUEST_SLIM:?}|{release}|{kernel_stamp}"
        ))[..8],
    );
    let base = cache_dir().join("sealed-guest");
    let root = base.join(format!("root-{key}"));
    if root.join("etc/os-release").exists() {
        eprintln!("sealed-guest: reusing {}", root.display());
        return root;
    }
    let debootstrap = require_tool("debootstrap");
    let chroot = require_tool("chroot");
    let start = Instant::now();
    let building = base.join(format!("root-{key}.building"));
    let _ = fs::remove_dir_all(&building);
    fs::create_dir_all(base.join("debs")).unwrap();
    let log = base.join("debootstrap.log");
    let mirror = debian_mirror();
    eprintln!(
        "sealed-guest: debootstrap --variant=minbase bookworm from {mirror} into {} (log {})",
        building.display(),
        log.display()
    );
    let status = Command::new(&debootstrap)
        .arg("--variant=minbase")
        .arg(format!("--include={GUEST_PACKAGES}"))
        .arg(format!("--cache-dir={}", base.join("debs").display()))
        .arg("bookworm")
        .arg(&building)
        .arg(&mirror)
        .stdout(fs::File::create(&log).unwrap())
        .stderr(Stdio::from(
            fs::File::create(log.with_extension("err")).unwrap(),
        ))
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", debootstrap.display()));
    assert!(
        status.success(),
        "debootstrap failed ({status}; needs root and the network): see {} and {}",
        log.display(),
        log.with_extension("err").display()
    );
    for dir in GUEST_SLIM {
        let path = building.join(dir);
        if path.is_dir() {
            fs::remove_dir_all(&path).unwrap();
        } else if path.exists() {
            fs::remove_file(&path).unwrap();
        }
    }
    // The whole OS is the initrd: the kernel runs /init, systemd in host mode.
    symlink("/lib/systemd/systemd", building.join("init")).unwrap();
    // The kernel's modules; the kernel itself is given to build-uki (--kernel), not
    // packed into the initrd.
    let from = assets.modules_dir();
    let to = building.join("lib/modules").join(&release);
    for rel in GUEST_MODULES {
        let dest = to.join(rel);
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(from.join(rel), &dest)
            .unwrap_or_else(|e| panic!("copying {}: {e}", from.join(rel).display()));
    }
    for file in [
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.order",
    ] {
        fs::copy(from.join(file), to.join(file)).unwrap();
    }
    run_ok(
        Command::new(&chroot)
            .arg(&building)
            .args(["depmod", "-a", &release]),
    );
    fs::rename(&building, &root).unwrap();
    eprintln!(
        "sealed-guest: built {} in {}",
        root.display(),
        elapsed(start)
    );
    root
}

/// The test's additions to the guest root (given to build-uki as
/// `--overlay-rootfs`): the unlock script, its three units, and masks for units
/// that only slow the boot down (gettys, timers).
fn write_overlay(dir: &Path) {
    let sbin = dir.join("usr/local/sbin");
    fs::create_dir_all(&sbin).unwrap();
    fs::write(sbin.join("sbkit-seal"), SEAL_SCRIPT).unwrap();
    fs::set_permissions(sbin.join("sbkit-seal"), fs::Permissions::from_mode(0o755)).unwrap();
    let units = dir.join("etc/systemd/system");
    for (unit, text, wanted_by) in [
        ("sbkit-seal-early.service", EARLY_UNIT, "sysinit.target"),
        ("sbkit-seal-sysinit.service", SYSINIT_UNIT, "basic.target"),
        ("sbkit-seal-ready.service", READY_UNIT, "multi-user.target"),
    ] {
        fs::create_dir_all(units.join(format!("{wanted_by}.wants"))).unwrap();
        fs::write(units.join(unit), text).unwrap();
        symlink(
            format!("../{unit}"),
            units.join(format!("{wanted_by}.wants")).join(unit),
        )
        .unwrap();
    }
    for masked in [
        "getty@tty1.service",
        "serial-getty@ttyS0.service",
        "apt-daily.timer",
        "apt-daily-upgrade.timer",
        "dpkg-db-backup.timer",
        "e2scrub_all.timer",
        "e2scrub_reap.service",
        "fstrim.timer",
    ] {
        symlink("/dev/null", units.join(masked)).unwrap();
    }
}

/// How one UKI is signed.
enum Signing<'a> {
    /// `-k keys`: db key and PCR key of one directory.
    Keys(&'a Path),
    /// `-k keys --tpm-pcr-private-key other`: our db key, another PCR key.
    OtherPcrKey(&'a Path, &'a Path),
    /// `--sb-key/--sb-cert` only: no PCR key, so no `.pcrsig` or `.pcrpkey`.
    NoPcrKey(&'a Path),
}

/// A UKI built by `build-uki dir:ROOT --overlay-rootfs OVERLAY -t uki` with default
/// phases; returns it and build-uki's JSON report.
fn build_uki(
    root: &Path,
    overlay: &Path,
    out: &Path,
    stub: u32,
    cmdline: &str,
    signing: Signing<'_>,
) -> (PathBuf, serde_json::Value) {
    let mut cmd = our_bin("build-uki");
    cmd.arg(format!("dir:{}", root.display()))
        .arg("--overlay-rootfs")
        .arg(overlay)
        .args(["-t", "uki", "--json", "--cmdline", cmdline, "-d"])
        .arg(out)
        .arg("--kernel")
        .arg(Assets::locate().kernel())
        .arg("--stub")
        .arg(Assets::locate().stub(stub));
    match signing {
        Signing::Keys(keys) => {
            cmd.arg("-k").arg(keys);
        }
        Signing::OtherPcrKey(keys, other) => {
            cmd.arg("-k")
                .arg(keys)
                .arg("--tpm-pcr-private-key")
                .arg(other.join("tpm2-pcr-private.pem"));
        }
        Signing::NoPcrKey(keys) => {
            cmd.arg("--sb-key")
                .arg(keys.join("db.key"))
                .arg("--sb-cert")
                .arg(keys.join("db.pem"));
        }
    }
    let output = run_ok(&mut cmd);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("build-uki --json printed no JSON ({e})"));
    let uki = out.join("norole.efi");
    assert!(uki.is_file(), "build-uki wrote no {}", uki.display());
    (uki, report)
}

/// The predicted sha256 PCR 11 of `uki` for the empty phase path: build-uki's
/// report when it signed a policy; without a PCR key it predicts nothing, and the
/// library's prediction over the finished UKI (the stub's measured sections, as
/// build-uki reported them) stands in.
fn predicted_base(report: &serde_json::Value, uki: &Path) -> Vec<u8> {
    let reported = report["entries"][0]["pcr11"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries[0].pcr11 in {report}"))
        .iter()
        .find(|pair| pair[0] == "sha256")
        .and_then(|pair| pair[1].as_str())
        .map(|value| hex::decode(value).unwrap());
    if let Some(value) = reported {
        return value;
    }
    let measured: Vec<String> = report["measured_sections"]
        .as_array()
        .unwrap_or_else(|| panic!("no measured_sections in {report}"))
        .iter()
        .map(|name| name.as_str().unwrap().to_string())
        .collect();
    let empty = PhasePath::empty();
    let prediction = predict_uki(
        &fs::read(uki).unwrap(),
        &measured,
        &[DigestAlgorithm::Sha256],
        std::slice::from_ref(&empty),
    )
    .unwrap();
    prediction
        .value(DigestAlgorithm::Sha256, &empty)
        .expect("a sha256 prediction")
        .to_vec()
}

/// `pcr` extended by each phase word as systemd-pcrphase does: `H(pcr || H(word))`.
fn extend_words(mut pcr: Vec<u8>, words: &[&str]) -> String {
    for word in words {
        let mut h = Sha256::new();
        h.update(&pcr);
        h.update(Sha256::digest(word.as_bytes()));
        pcr = h.finalize().to_vec();
    }
    hex::encode(pcr)
}

/// A swtpm serving `state` on a socket for tss2's swtpm TCTI (`swtpm:path=…`
/// expects the control channel at `<path>.ctrl`), started up by itself; stopped
/// (by its pid) and waited for when dropped, so the state directory is unlocked
/// for QEMU's swtpm.
struct HostTpm {
    child: Child,
    socket: PathBuf,
}

impl HostTpm {
    fn start(state: &Path) -> HostTpm {
        fs::create_dir_all(state).unwrap();
        let socket = state.join("host.sock");
        let ctrl = state.join("host.sock.ctrl");
        let _ = fs::remove_file(&socket);
        let _ = fs::remove_file(&ctrl);
        let child = Command::new(require_tool("swtpm"))
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state.display()))
            .arg("--server")
            .arg(format!("type=unixio,path={}", socket.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", ctrl.display()))
            .args(["--flags", "startup-clear,not-need-init"])
            .arg("--log")
            .arg(format!("file={},level=1", state.join("host.log").display()))
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting swtpm: {e}"));
        let mut tpm = HostTpm { child, socket };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(tpm.socket.exists() && ctrl.exists()) {
            if let Ok(Some(status)) = tpm.child.try_wait() {
                panic!("swtpm exited before creating its sockets: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "swtpm did not create its sockets"
            );
            thread::sleep(Duration::from_millis(20));
        }
        tpm
    }
}

impl HostTpm {
    /// Sends TPM2_Shutdown(SU_CLEAR) on a connection of its own, so that stopping
    /// swtpm is an orderly shutdown (not counted against the dictionary-attack limit).
    fn shutdown(self) {
        let mut stream = std::os::unix::net::UnixStream::connect(&self.socket)
            .unwrap_or_else(|e| panic!("connecting to swtpm at {}: {e}", self.socket.display()));
        // tag TPM_ST_NO_SESSIONS, size 12, TPM_CC_Shutdown, TPM_SU_CLEAR.
        stream
            .write_all(&[0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x45, 0, 0])
            .unwrap();
        let mut response = [0u8; 10];
        std::io::Read::read_exact(&mut stream, &mut response).unwrap();
        assert_eq!(
            &response[6..10],
            &[0, 0, 0, 0],
            "TPM2_Shutdown failed: response {response:02x?}"
        );
    }
}

impl Drop for HostTpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// AES-ECB of whole blocks by `openssl enc` (no padding, no IV).
fn aes_ecb(work: &Path, key: &[u8], blocks: &[u8]) -> Vec<u8> {
    let input = work.join("ecb.in");
    fs::write(&input, blocks).unwrap();
    let out = run_ok(
        Command::new(require_tool("openssl"))
            .args(["enc", "-aes-256-ecb", "-nopad", "-K"])
            .arg(hex::encode(key))
            .arg("-in")
            .arg(&input),
    )
    .stdout;
    assert_eq!(out.len(), blocks.len(), "openssl aes-256-ecb output length");
    out
}

/// Sector 0 of an aes-xts-plain64 volume (512-byte sectors) holding `plain` (padded
/// with zeros), as dm-crypt writes it: IEEE P1619 XTS with the tweak
/// `E_K2(plain64 IV = 0)` multiplied by x per block. `openssl enc` has no XTS, so
/// AES-ECB is the primitive and the tweak arithmetic is done here.
fn xts_sector0(work: &Path, volume_key: &[u8], plain: &[u8]) -> Vec<u8> {
    let (k1, k2) = volume_key.split_at(32);
    let mut sector = plain.to_vec();
    sector.resize(512, 0);
    let mut tweak: [u8; 16] = aes_ecb(work, k2, &[0u8; 16]).try_into().unwrap();
    let mut tweaks = Vec::with_capacity(512);
    for _ in 0..32 {
        tweaks.extend_from_slice(&tweak);
        // Multiply by x in GF(2^128), little-endian, reduction polynomial 0x87.
        let carry = tweak[15] >> 7;
        for i in (1..16).rev() {
            tweak[i] = (tweak[i] << 1) | (tweak[i - 1] >> 7);
        }
        tweak[0] = (tweak[0] << 1) ^ (0x87 * carry);
    }
    let masked: Vec<u8> = sector.iter().zip(&tweaks).map(|(p, t)| p ^ t).collect();
    aes_ecb(work, k1, &masked)
        .iter()
        .zip(&tweaks)
        .map(|(c, t)| c ^ t)
        .collect()
}

/// The LUKS2 volume: formatted with [`PASSPHRASE`] and a known volume key, sector 0
/// of its data encrypted from [`PAYLOAD`] with that key (aes-xts-plain64, as
/// dm-crypt will read it), and a systemd-tpm2 token enrolled by systemd-cryptenroll
/// against the swtpm `tpm_state`, bound to `pcr_public` for PCR 11 and to no
/// literal PCR. Returns the image and `cryptsetup luksDump`.
fn sealed_volume(work: &Path, tpm_state: &Path, pcr_public: &Path) -> (PathBuf, String) {
    let cryptsetup = require_tool("cryptsetup");
    let cryptenroll = require_tool("systemd-cryptenroll");
    let disk = work.join("sealed.img");
    fs::File::create(&disk).unwrap().set_len(32 << 20).unwrap();
    // A fixed volume key whose two XTS halves differ (OpenSSL refuses equal halves).
    let mut volume_key = Sha256::digest(b"sbkit sealed volume key, half 1").to_vec();
    volume_key.extend_from_slice(&Sha256::digest(b"sbkit sealed volume key, half 2"));
    let key_file = work.join("volume.key");
    fs::write(&key_file, &volume_key).unwrap();
    let pass_file = work.join("passphrase");
    fs::write(&pass_file, PASSPHRASE).unwrap();
    run_ok(
        Command::new(&cryptsetup)
            .args(["luksFormat", "--type", "luks2", "--batch-mode"])
            .args(["--cipher", "aes-xts-plain64", "--key-size", "512"])
            .args(["--sector-size", "512", "--offset"])
            .arg(DATA_OFFSET_SECTORS.to_string())
            // Passphrase keyslot cheap to open: this test is about the TPM keyslot.
            .args(["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"])
            .arg("--volume-key-file")
            .arg(&key_file)
            .arg("--key-file")
            .arg(&pass_file)
            .arg(&disk),
    );
    let cipher = xts_sector0(work, &volume_key, PAYLOAD.as_bytes());
    let mut image = fs::OpenOptions::new().write(true).open(&disk).unwrap();
    image
        .seek(SeekFrom::Start(DATA_OFFSET_SECTORS * 512))
        .unwrap();
    image.write_all(&cipher).unwrap();
    drop(image);

    // Manufacture the TPM with only the SHA-256 PCR bank active (swtpm's default is
    // all four): the firmware and the stub hash the 30 MB UKI once per active bank,
    // in emulated code, and systemd seals to the SHA-256 bank either way.
    fs::create_dir_all(tpm_state).unwrap();
    run_ok(
        Command::new(require_tool("swtpm_setup"))
            .args(["--tpm2", "--pcr-banks", "sha256", "--tpmstate"])
            .arg(tpm_state),
    );
    let tpm = HostTpm::start(tpm_state);
    let enrolled = run_ok(
        Command::new(&cryptenroll)
            .arg(format!("--tpm2-device=swtpm:path={}", tpm.socket.display()))
            .arg(format!("--tpm2-public-key={}", pcr_public.display()))
            .arg("--tpm2-public-key-pcrs=11")
            .arg("--tpm2-pcrs=")
            .arg(&disk)
            .env("PASSWORD", PASSPHRASE),
    );
    tpm.shutdown();
    let dump = String::from_utf8_lossy(
        &run_ok(Command::new(&cryptsetup).arg("luksDump").arg(&disk)).stdout,
    )
    .into_owned();
    assert!(
        dump.contains("systemd-tpm2") && dump.contains("tpm2-pubkey-pcrs: 11"),
        "systemd-cryptenroll enrolled no signed-policy TPM2 token:\n{}\n{dump}",
        String::from_utf8_lossy(&enrolled.stderr)
    );
    (disk, dump)
}

/// Boots `uki` as the removable-media loader with a copy of `vars`, the sealed
/// volume on virtio-blk and swtpm on `tpm_state`; ends at [`MARK_DONE`].
fn boot_sealed(
    work: &Path,
    name: &str,
    uki: &Path,
    vars: &Path,
    disk: &Path,
    tpm_state: &Path,
) -> BootOutcome {
    let esp = work.join(format!("esp-{name}"));
    fs::create_dir_all(esp.join("EFI/BOOT")).unwrap();
    fs::copy(uki, esp.join("EFI/BOOT/BOOTX64.EFI")).unwrap();
    let run_vars = work.join(format!("vars-{name}.fd"));
    fs::copy(vars, &run_vars).unwrap();
    let serial = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sealed-{name}.serial.log"));
    let mut spec = BootSpec::new(
        Firmware::ovmf_secboot(),
        &run_vars,
        Media::EspDir(esp),
        &serial,
    );
    spec.tpm = Some(Tpm {
        state_dir: tpm_state.to_path_buf(),
    });
    spec.memory_mib = 1536;
    spec.timeout = Duration::from_secs(300);
    spec.success = vec![MARK_DONE.to_string()];
    // Let the guest power off by itself: its kernel sends TPM2_Shutdown. Killing QEMU
    // is a power loss, which swtpm counts against its dictionary-attack limit (3):
    // after a few, every unseal fails with "dictionary attack lockout mode".
    spec.stop_on_marker = false;
    spec.failure
        .extend(["You are in emergency mode", "Failed to start sbkit"].map(String::from));
    spec.extra_args = vec![
        "-drive".into(),
        format!("if=none,id=sealed,format=raw,file={}", disk.display()),
        "-device".into(),
        "virtio-blk-pci,drive=sealed,serial=sbkit-disk0".into(),
    ];
    let outcome = qemu::boot(&spec);
    eprintln!(
        "boot {name}: {:.1?} (marker after {:?})",
        outcome.elapsed, outcome.marker_after
    );
    outcome
}

/// Boots `uki` through the product, `sbkit test-boot` (our keys enrolled by `enroll
/// ovmf`, Secure Boot enforced), with the volume as `--disk` (serial `sbkit-disk0`)
/// and the TPM state kept in `--tpm-state`; asserts its verdict (booted with Secure
/// Boot on, after [`MARK_DONE`]) and returns the console as a [`BootOutcome`].
fn boot_with_test_boot(
    work: &Path,
    name: &str,
    uki: &Path,
    keys: &Path,
    disk: &Path,
    tpm_state: &Path,
) -> BootOutcome {
    let serial = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sealed-{name}.serial.log"));
    let _ = fs::remove_file(&serial);
    let started = Instant::now();
    let mut cmd = our_bin("sbkit");
    cmd.args(["--native", "test-boot", "--json", "--timeout", "300"])
        .args(["--expect", MARK_DONE, "--memory-mib", "1536", "--keys"])
        .arg(keys)
        .arg("--tpm-state")
        .arg(tpm_state)
        .arg("--disk")
        .arg(disk)
        .arg("--serial-log")
        .arg(&serial)
        .arg(uki)
        .current_dir(work);
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let elapsed = started.elapsed();
    let log = fs::read_to_string(&serial).unwrap_or_default();
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    let outcome = BootOutcome {
        matched: log
            .lines()
            .find(|line| line.contains(MARK_DONE))
            .map(|line| qemu::Matched::Success(line.to_string())),
        log,
        serial_log: serial,
        timed_out: false,
        elapsed,
        marker_after: None,
        exit: output.status.to_string(),
        qemu_stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        command: format!("{cmd:?}"),
    };
    eprintln!("boot {name} (sbkit test-boot): {elapsed:.1?}");
    let verdict: serde_json::Value = serde_json::from_str(&report).unwrap_or_else(|e| {
        panic!(
            "sbkit test-boot printed no JSON report ({e}): {report}\n{}",
            outcome.context()
        )
    });
    assert_eq!(
        (
            output.status.code(),
            &verdict["result"]["verdict"]["verdict"],
            &verdict["result"]["verdict"]["secure_boot"]
        ),
        (
            Some(0),
            &serde_json::json!("booted"),
            &serde_json::json!(true)
        ),
        "sbkit test-boot must report a boot with Secure Boot on: {verdict}\n{}",
        outcome.context()
    );
    assert_eq!(
        verdict["tpm_state"].as_str(),
        Some(tpm_state.to_str().unwrap()),
        "{verdict}"
    );
    outcome
}

/// One `SBKIT-SEAL` line: its `key=value` words.
type Stage = BTreeMap<String, String>;

/// The `SBKIT-SEAL` lines of a boot, by stage.
fn stages(outcome: &BootOutcome) -> BTreeMap<String, Stage> {
    let mut out = BTreeMap::new();
    for line in outcome.log.lines() {
        let Some(rest) = line.trim().strip_prefix("SBKIT-SEAL ") else {
            continue;
        };
        let words: Stage = rest
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(stage) = words.get("stage") {
            out.insert(stage.clone(), words);
        }
    }
    out
}

/// Checks one boot: it ended with [`MARK_DONE`], every stage reported, each stage's
/// PCR 11 equals `base` extended by the phase words measured by then, the `.pcrsig`
/// was (not) there, and each stage's result is the expected one (`unlocked` with
/// the payload read back, or `locked`).
fn check_boot(
    name: &str,
    outcome: &BootOutcome,
    base: Vec<u8>,
    sig: &str,
    expected: [(&str, &str); 3],
) {
    outcome.assert_success();
    // "locked" must come from the policy, not from a TPM that refuses everything.
    assert!(
        !outcome.log.contains("dictionary attack lockout"),
        "boot {name}: the TPM is in dictionary-attack lockout\n{}",
        outcome.context()
    );
    let found = stages(outcome);
    for (stage, result) in expected {
        let words: &[&str] = match stage {
            "early" => &[],
            "sysinit" => &["sysinit"],
            _ => &["sysinit", "ready"],
        };
        let line = found.get(stage).unwrap_or_else(|| {
            panic!(
                "boot {name}: no SBKIT-SEAL line for stage {stage}\n{}",
                outcome.context()
            )
        });
        let context = || {
            format!(
                "boot {name}, stage {stage}: {line:?}\n{}",
                outcome.context()
            )
        };
        assert_eq!(
            line.get("pcr11").map(String::as_str),
            Some(extend_words(base.clone(), words).as_str()),
            "guest PCR 11 differs from build-uki's prediction extended by {words:?}; {}",
            context()
        );
        assert_eq!(
            line.get("sig").map(String::as_str),
            Some(sig),
            "{}",
            context()
        );
        assert_eq!(
            line.get("result").map(String::as_str),
            Some(result),
            "{}",
            context()
        );
        if result == "unlocked" {
            assert_eq!(
                line.get("payload").map(String::as_str),
                Some(PAYLOAD),
                "the unlocked volume must read back the host's plaintext; {}",
                context()
            );
        }
    }
}

#[test]
fn a_volume_sealed_to_our_pcr_key_unlocks_only_under_our_signed_policy() {
    let total = Instant::now();
    for tool in [
        "qemu-system-x86_64",
        "swtpm",
        "virt-fw-vars",
        "cryptsetup",
        "systemd-cryptenroll",
        "openssl",
        "swtpm_setup",
        "debootstrap",
        "chroot",
    ] {
        require_tool(tool);
    }
    let root = guest_root();
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let overlay = work.join("overlay");
    write_overlay(&overlay);

    let ours = work.join("keys-ours");
    let other = work.join("keys-other");
    genkey("sealed", &ours, &[]);
    genkey("other", &other, &[]);

    let step = Instant::now();
    let cmd_a = "console=ttyS0 panic=-1 quiet";
    let cmd_b = "console=ttyS0 panic=-1 quiet sbkit.variant=rebuilt";
    let cmd_c = "console=ttyS0 panic=-1 quiet sbkit.variant=other-pcr-key";
    // Not quiet: sbkit test-boot's verdict reads the kernel's "Secure boot enabled".
    let cmd_d = "console=ttyS0 panic=-1 sbkit.variant=no-pcrsig";
    // Four builds of the same 90 MB rootfs: run side by side.
    let [(uki_252, report_252), (uki_254, report_254), (uki_other, report_other), (uki_none, report_none)] =
        thread::scope(|scope| {
            let jobs = [
                ("out-252", 252, cmd_a, Signing::Keys(&ours)),
                ("out-254", 254, cmd_b, Signing::Keys(&ours)),
                ("out-other", 254, cmd_c, Signing::OtherPcrKey(&ours, &other)),
                ("out-none", 252, cmd_d, Signing::NoPcrKey(&ours)),
            ]
            .map(|(dir, stub, cmdline, signing)| {
                let (root, overlay, out) = (&root, &overlay, work.join(dir));
                scope.spawn(move || build_uki(root, overlay, &out, stub, cmdline, signing))
            });
            jobs.map(|job| job.join().expect("a build-uki thread panicked"))
        });
    assert_eq!(
        report_252["phases"]["paths"],
        serde_json::json!(["", "sysinit", "sysinit:ready"]),
        "build-uki must sign the host-mode phases for a rootfs without /etc/initrd-release: {}",
        report_252["phases"]
    );
    eprintln!("build-uki x4: {}", elapsed(step));

    let step = Instant::now();
    let tpm_state = work.join("tpm");
    let (disk, _dump) = sealed_volume(work, &tpm_state, &ours.join("tpm2-pcr-public.pem"));
    let vars = enrolled_store(work, &ours);
    eprintln!("volume + enrollment + store: {}", elapsed(step));

    let unlocks = [
        ("early", "unlocked"),
        ("sysinit", "unlocked"),
        ("ready", "unlocked"),
    ];
    let locked = [
        ("early", "locked"),
        ("sysinit", "locked"),
        ("ready", "locked"),
    ];

    let boot = boot_sealed(work, "ours-252", &uki_252, &vars, &disk, &tpm_state);
    check_boot(
        "ours-252",
        &boot,
        predicted_base(&report_252, &uki_252),
        "present",
        unlocks,
    );

    let boot = boot_sealed(work, "ours-254-cmdline", &uki_254, &vars, &disk, &tpm_state);
    check_boot(
        "ours-254-cmdline",
        &boot,
        predicted_base(&report_254, &uki_254),
        "present",
        unlocks,
    );

    let boot = boot_sealed(work, "other-pcr-key", &uki_other, &vars, &disk, &tpm_state);
    check_boot(
        "other-pcr-key",
        &boot,
        predicted_base(&report_other, &uki_other),
        "present",
        locked,
    );
    assert!(
        boot.log
            .contains("Couldn't find signature for this PCR bank, PCR index and public key"),
        "systemd-cryptsetup must refuse the other key's signature for that reason\n{}",
        boot.context()
    );

    let boot = boot_with_test_boot(work, "no-pcrsig", &uki_none, &ours, &disk, &tpm_state);
    check_boot(
        "no-pcrsig",
        &boot,
        predicted_base(&report_none, &uki_none),
        "absent",
        locked,
    );

    eprintln!("sealed_disk: total {}", elapsed(total));
}

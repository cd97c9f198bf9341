//! Real firmware judges `genkey`'s `db.auth`: OVMF in user mode (PK and KEK of key set A
//! enrolled, Secure Boot enforced) must accept A's db update, signed by A's KEK, and
//! refuse B's, signed by a KEK it does not know. Setup mode would accept both and prove
//! nothing, so the guest also reports SetupMode and SecureBoot and we check them.
//!
//! Needs scripts/install-deps.sh (QEMU, OVMF, virt-fw-vars) and scripts/fetch-assets.sh
//! (kernel, busybox). One boot, ~10 s under TCG.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::guest::{self, Assets, Initramfs};
use common::qemu::{self, BootSpec, Enrolled, Firmware, Media, VarStore};
use sha2::{Digest, Sha256};

/// NV | BS | RT | TIME_BASED_AUTHENTICATED_WRITE_ACCESS: a replacing (non-append) write.
const DB_ATTRIBUTES: u32 = 0x27;

/// Runs `genkey NAME -o DIR` and returns DIR.
fn genkey(name: &str, dir: &Path) -> PathBuf {
    let out = Command::new(env!("CARGO_BIN_EXE_genkey"))
        .arg(name)
        .arg("-o")
        .arg(dir)
        .output()
        .expect("running genkey");
    assert!(
        out.status.success(),
        "genkey {name:?} -o {} failed ({}):\n{}\n{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    dir.to_path_buf()
}

/// `manifest.json`'s `owner_guid`.
fn owner_guid(dir: &Path) -> String {
    let path = dir.join("manifest.json");
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let manifest: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    manifest["owner_guid"]
        .as_str()
        .unwrap_or_else(|| panic!("{} has no string owner_guid", path.display()))
        .to_string()
}

/// The new variable contents of an EFI_VARIABLE_AUTHENTICATION_2 file: the ESL after
/// EFI_TIME (16 bytes) and the WIN_CERTIFICATE_UEFI_GUID (its dwLength covers the header
/// and the PKCS#7 signature).
fn esl_of_auth(auth: &[u8]) -> &[u8] {
    assert!(auth.len() > 40, "auth file too short: {} bytes", auth.len());
    let dw_length = u32::from_le_bytes(auth[16..20].try_into().unwrap()) as usize;
    let revision = u16::from_le_bytes(auth[20..22].try_into().unwrap());
    let cert_type = u16::from_le_bytes(auth[22..24].try_into().unwrap());
    assert_eq!(
        (revision, cert_type),
        (0x0200, 0x0EF1),
        "not a WIN_CERTIFICATE_UEFI_GUID"
    );
    assert!(
        16 + dw_length < auth.len(),
        "dwLength {dw_length} leaves no ESL in a {}-byte auth file",
        auth.len()
    );
    &auth[16 + dw_length..]
}

/// How the guest script reports db: `absent`, `unreadable`, or `<sha256>:<length>` of
/// what efivarfs returns (attributes u32 then the value).
fn db_state(efivarfs_bytes: &[u8]) -> String {
    format!(
        "{}:{}",
        hex::encode(Sha256::digest(efivarfs_bytes)),
        efivarfs_bytes.len()
    )
}

/// The guest side: B's update first (must be refused, db unchanged), then A's (must be
/// taken, db = A's ESL). Each write is one `dd` of attributes + auth file; efivarfs is
/// remounted after each so the state printed is the firmware's, not efivarfs' cache.
const GUEST_SCRIPT: &str = r#"
E=/sys/firmware/efi/efivars
DB=$E/db-d719b2cb-3d3a-4596-a3bc-dad00e67656f
db_state() {
  if [ ! -e "$DB" ]; then echo absent
  elif cat "$DB" >/tmp/db 2>/dev/null; then
    echo "$(sha256sum </tmp/db | cut -d' ' -f1):$(wc -c </tmp/db | tr -d ' ')"
  else echo unreadable
  fi
}
# A refused create leaves an empty, immutable file in efivarfs' cache; a remount lists
# the firmware's variables afresh.
remount() { umount "$E" && mount -t efivarfs efivarfs "$E"; }
write_db() {
  # efivarfs marks db immutable; the write must reach the firmware, not stop here.
  if [ -e "$DB" ]; then chattr -i "$DB"; fi
  dd if="$2" of="$DB" bs=1M 2>/tmp/dd.log
  rc=$?
  sed 's/^/  dd: /' /tmp/dd.log
  remount
  echo "SBKIT-TEST write-$1 rc=$rc db=$(db_state)"
}
echo "SBKIT-TEST before db=$(db_state)"
write_db other /sbkit/other-db.bin
write_db own /sbkit/own-db.bin
"#;

#[test]
fn firmware_takes_own_db_update_and_refuses_foreign_one() {
    let firmware = Firmware::ovmf_secboot();
    let assets = Assets::locate();
    let work = tempfile::tempdir().expect("temp dir");
    let dir_a = genkey("Acme Corp", &work.path().join("a"));
    let dir_b = genkey("Other Corp", &work.path().join("b"));
    let owner_a = owner_guid(&dir_a);

    // User mode with Secure Boot enforced; no db, so any EFI_TIME may create it.
    let vars = work.path().join("vars.fd");
    let store = VarStore {
        pk: Some(Enrolled::new(&owner_a, &dir_a.join("PK.pem"))),
        kek: vec![Enrolled::new(&owner_a, &dir_a.join("KEK.pem"))],
        db: Vec::new(),
        secure_boot: true,
    };
    let printout = store.write(&firmware, &vars);
    let names = qemu::var_names(&printout);
    assert!(
        names.iter().any(|n| n == "PK")
            && names.iter().any(|n| n == "KEK")
            && !names.iter().any(|n| n == "db"),
        "variable store must hold PK and KEK, and no db:\n{printout}"
    );

    let own_auth = fs::read(dir_a.join("db.auth")).expect("reading A's db.auth");
    let other_auth = fs::read(dir_b.join("db.auth")).expect("reading B's db.auth");
    let own_expected = db_state(&guest::efivarfs_payload(
        DB_ATTRIBUTES,
        esl_of_auth(&own_auth),
    ));

    let mut ramfs = Initramfs::guest(&assets, GUEST_SCRIPT);
    ramfs.host_binary(&qemu::require_tool("chattr"));
    ramfs.file(
        "sbkit/own-db.bin",
        &guest::efivarfs_payload(DB_ATTRIBUTES, &own_auth),
        0o644,
    );
    ramfs.file(
        "sbkit/other-db.bin",
        &guest::efivarfs_payload(DB_ATTRIBUTES, &other_auth),
        0o644,
    );
    let initrd = work.path().join("initrd.gz");
    ramfs.write_gz(&initrd);

    // The serial log stays in target/tmp after the test for inspection.
    let serial = Path::new(env!("CARGO_TARGET_TMPDIR")).join("firmware_db_update.serial.log");
    let spec = BootSpec::new(
        firmware,
        &vars,
        Media::guest_kernel(&assets, &initrd),
        &serial,
    );
    let outcome = qemu::boot(&spec);
    outcome.assert_success();
    outcome.assert_user_mode(true);

    let before = outcome.value("SBKIT-TEST before", "db");
    assert_eq!(
        before.as_deref(),
        Some("absent"),
        "db before the updates\n{outcome}"
    );
    let other_rc = outcome.value("SBKIT-TEST write-other", "rc");
    assert!(
        matches!(other_rc.as_deref(), Some(rc) if rc != "0"),
        "the firmware must refuse a db update signed by an unknown KEK (dd rc {other_rc:?})\n{outcome}"
    );
    assert_eq!(
        outcome.value("SBKIT-TEST write-other", "db"),
        before,
        "a refused update must leave db unchanged\n{outcome}"
    );
    assert_eq!(
        outcome.value("SBKIT-TEST write-own", "rc").as_deref(),
        Some("0"),
        "the firmware must take a db update signed by the enrolled KEK\n{outcome}"
    );
    assert_eq!(
        outcome.value("SBKIT-TEST write-own", "db"),
        Some(own_expected),
        "db must read back as attributes 0x27 + the ESL of A's db.auth\n{outcome}"
    );
    eprintln!(
        "boot: marker after {:.1?}, total {:.1?}",
        outcome.marker_after.unwrap_or_default(),
        outcome.elapsed
    );
}

//! The launcher's containers as the engine sees them (`docker inspect` is
//! the judge): mounts with the right modes, the caller's user, working
//! directory, token devices and the USB cgroup rule.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::tools::{require_tool, run_ok};
use sbkit::launcher::run::{TokenAccess, USB_CGROUP_RULE};

/// An image that exists on this machine: the launcher's own base when built, else any.
fn some_image() -> String {
    let out = run_ok(Command::new(require_tool("docker")).args([
        "images",
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ]));
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    list.lines()
        .find(|l| l.starts_with("sbkit-base") || l.starts_with("genkey"))
        .or_else(|| list.lines().find(|l| !l.contains("<none>")))
        .unwrap_or_else(|| panic!("no image in the engine: run scripts/base-image.sh"))
        .to_string()
}

fn inspect(id: &str) -> serde_json::Value {
    let out = run_ok(Command::new(require_tool("docker")).args(["inspect", id]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0].clone()
}

#[test]
fn containers_get_the_claimed_mounts_user_devices_and_rules() {
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    std::fs::create_dir_all(cwd.join("rootfs")).unwrap();
    std::fs::create_dir_all(cwd.join("keys")).unwrap();
    let args: Vec<String> = [
        "dir:rootfs",
        "-t",
        "iso",
        "-d",
        "build",
        "-k",
        "keys",
        "--sb-key",
        "pkcs11:token=mkosi;id=%02;type=private",
        "--sb-cert",
        "keys/db.pem",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut spec = sbkit::launcher::plan("build-uki", &args, cwd, false, false);
    spec.image = some_image();
    // A pkcs11: URI asks for token access by itself.
    assert_ne!(spec.token, TokenAccess::None);
    spec.token = TokenAccess::Usb(vec![PathBuf::from("/dev/null")]);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let (docker, id) = rt.block_on(async {
        let docker = sbkit::launcher::engine::connect().await.expect("engine");
        let id = sbkit::launcher::run::create(&docker, &spec)
            .await
            .expect("create");
        (docker, id)
    });
    let info = inspect(&id);
    rt.block_on(sbkit::launcher::run::remove(&docker, &id));

    let user = format!("{}:{}", nix::unistd::getuid(), nix::unistd::getgid());
    assert_eq!(info["Config"]["User"], user);
    // The work directory is under /tmp, the container's own scratch space: it moves below /host.
    assert!(cwd.starts_with("/tmp"), "tempdir is expected under /tmp");
    let inside = |p: &Path| format!("/host{}", p.display());
    assert_eq!(info["Config"]["WorkingDir"], inside(cwd));
    let cmd: Vec<String> = serde_json::from_value(info["Config"]["Cmd"].clone()).unwrap();
    assert_eq!(cmd[0], format!("dir:{}", inside(&cwd.join("rootfs"))));
    assert!(cmd.contains(&"pkcs11:token=mkosi;id=%02;type=private".to_string()));
    let mounts = info["Mounts"].as_array().unwrap();
    let mount = |p: &Path| {
        mounts
            .iter()
            .find(|m| m["Source"] == p.display().to_string())
            .unwrap_or_else(|| panic!("no mount of {}: {mounts:?}", p.display()))
    };
    assert_eq!(
        mount(&cwd.join("rootfs"))["RW"],
        false,
        "inputs are read-only"
    );
    assert_eq!(mount(&cwd.join("keys"))["RW"], false);
    assert_eq!(
        mount(&cwd.join("build"))["RW"],
        true,
        "the output directory is writable"
    );
    assert_eq!(
        mount(&cwd.join("build"))["Destination"],
        inside(&cwd.join("build"))
    );
    let devices = info["HostConfig"]["Devices"].as_array().unwrap();
    assert!(
        devices.iter().any(|d| d["PathOnHost"] == "/dev/null"),
        "{devices:?}"
    );
    assert_eq!(info["HostConfig"]["DeviceCgroupRules"][0], USB_CGROUP_RULE);
}

/// Runs `sbkit ARGS` as uid/gid 1000 (in the docker group, so it reaches the engine).
fn sbkit_as_user(cwd: &Path, args: &[&str]) -> std::process::Output {
    let docker_gid =
        String::from_utf8_lossy(&run_ok(Command::new("getent").args(["group", "docker"])).stdout)
            .split(':')
            .nth(2)
            .unwrap_or_else(|| panic!("no docker group"))
            .trim()
            .to_string();
    Command::new(require_tool("setpriv"))
        .args([
            "--reuid=1000",
            "--regid=1000",
            &format!("--groups={docker_gid}"),
            "--",
        ])
        .arg(env!("CARGO_BIN_EXE_sbkit"))
        .args(args)
        .current_dir(cwd)
        .env("HOME", cwd)
        .output()
        .unwrap()
}

#[test]
fn genkey_in_its_container_writes_files_owned_by_the_caller_and_passes_exit_codes() {
    use std::os::unix::fs::MetadataExt;
    let image = sbkit::launcher::image_for("genkey");
    let present = Command::new(require_tool("docker"))
        .args(["image", "inspect", &image])
        .output()
        .unwrap()
        .status
        .success();
    assert!(
        present,
        "image {image} missing: run scripts/build-images.sh"
    );
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    std::fs::set_permissions(cwd, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = sbkit_as_user(cwd, &["genkey", "Acme Corp", "-o", "keys"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let key = std::fs::metadata(cwd.join("keys/PK.key")).unwrap();
    assert_eq!(
        (key.uid(), key.gid()),
        (1000, 1000),
        "files belong to the caller"
    );
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    let dir = std::fs::metadata(cwd.join("keys")).unwrap();
    assert_eq!((dir.uid(), dir.permissions().mode() & 0o777), (1000, 0o700));
    // The tool's refusal comes back as the launcher's exit code.
    let again = sbkit_as_user(cwd, &["genkey", "Acme Corp", "-o", "keys"]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a key set"));
}

/// The work directory of a launcher test: keys and a busybox rootfs.
fn launcher_fixture() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let work = tempfile::tempdir().unwrap();
    let keys = work.path().join("keys");
    common::tools::genkey("Acme Corp", &keys, &[]);
    let root = work.path().join("rootfs");
    common::rootfs::busybox_rootfs(&root, common::rootfs::MARKER_INIT);
    (work, keys, root)
}

fn require_image(tool: &str) {
    let image = sbkit::launcher::image_for(tool);
    let present = Command::new(require_tool("docker"))
        .args(["image", "inspect", &image])
        .output()
        .unwrap()
        .status
        .success();
    assert!(
        present,
        "image {image} missing: scripts/test.sh builds it (sbkit images build)"
    );
}

#[test]
fn an_image_only_the_engine_has_becomes_a_uki_and_a_missing_one_is_a_clear_error() {
    require_image("build-uki");
    let (work, keys, root) = launcher_fixture();
    let w = work.path();
    // A local image from the rootfs: docker import of its tarball, no registry involved.
    let tarball = w.join("rootfs.tar");
    run_ok(
        Command::new(require_tool("tar"))
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tarball)
            .arg("."),
    );
    let tag = format!("sbkit-launcher-local:{}", std::process::id());
    run_ok(
        Command::new(require_tool("docker"))
            .arg("import")
            .arg(&tarball)
            .arg(&tag),
    );
    let stub = common::guest::Assets::locate().stub(254);
    let out = Command::new(env!("CARGO_BIN_EXE_sbkit"))
        .args([
            "build-uki",
            &tag,
            "-t",
            "uki",
            "--cmdline",
            "console=ttyS0",
            "-d",
        ])
        .arg(w.join("out"))
        .arg("-k")
        .arg(&keys)
        .arg("--stub")
        .arg(&stub)
        .current_dir(w)
        .output()
        .unwrap();
    let _ = Command::new("docker").args(["rmi", &tag]).output();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists only in the local engine"));
    run_ok(
        Command::new(require_tool("sbverify"))
            .arg("--cert")
            .arg(keys.join("db.pem"))
            .arg(w.join("out/norole.efi")),
    );

    let missing = Command::new(env!("CARGO_BIN_EXE_sbkit"))
        .args([
            "build-uki",
            "no-such-image-anywhere:1",
            "-t",
            "uki",
            "-d",
            "out2",
            "-k",
        ])
        .arg(&keys)
        .current_dir(w)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        !missing.status.success() && err.contains("not in the local engine and names no registry"),
        "{err}"
    );
    assert!(!w.join("out2/norole.efi").exists());
}

#[test]
fn test_boot_in_the_qemu_image_gives_verdicts() {
    require_image("sbkit-qemu");
    let (work, keys, root) = launcher_fixture();
    let w = work.path();
    let _assets = common::guest::Assets::locate();
    common::uki_guest::build_test_iso(&root, &keys, &w.join("build"), &[]);
    std::fs::set_permissions(w, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sbkit"))
        .args([
            "test-boot",
            "build/norole.iso",
            "--keys",
            "keys",
            "--tpm",
            "--timeout",
            "240",
        ])
        .current_dir(w)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("booted with Secure Boot on"), "{stdout}");

    // Another key set's keys enrolled: our ISO's systemd-boot is refused.
    let other = w.join("other");
    common::tools::genkey("Other", &other, &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_sbkit"))
        .args([
            "test-boot",
            "build/norole.iso",
            "--keys",
            "other",
            "--timeout",
            "240",
        ])
        .current_dir(w)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Access Denied"), "{stdout}");
}

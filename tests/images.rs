//! The container images (containerfiles/, docker-bake.hcl) against the real Docker
//! engine: every bake target builds with no network from the debootstrap base, the
//! images are small, and each tool does its job in its image as a non-root user — keys
//! from genkey, an ISO from build-uki with the image's own systemd stub and systemd-boot,
//! a variable store from enroll in sbkit-qemu, and that ISO booting in sbkit-qemu's
//! QEMU + OVMF (Secure Boot enforced) + swtpm.
//!
//! The first test to need the images makes them, once per run: `scripts/base-image.sh`
//! (a no-op while sbkit-base:bookworm is current; about 50 s from nothing, 3 s from the
//! cached rootfs tarball in .cache/base-image), then `scripts/build-images.sh` with
//! `TAG=sbkit-test` and `SBKIT_BIN_DIR` = stripped copies of the binaries this `cargo test`
//! built, so the images hold the code under test and the user's `:latest` images stay
//! as they are (about 1.5 min cold, 30 s when only the binaries changed). The tests
//! themselves take about 40 s, most of it the boot.
//!
//! Needs docker (a running engine), debootstrap and jq (scripts/install-deps.sh), root or
//! sudo for debootstrap, and the boot assets (scripts/fetch-assets.sh). Nothing skips.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use common::guest::MARK_PASS;
use common::qemu::{print_vars, var_names, BootSpec, Firmware, Media, DEFAULT_FAILURE_MARKERS};
use common::rootfs::{busybox_rootfs, MARKER_INIT};
use common::tools::{repo_root, require_tool, run_ok};

/// Tag of the images the tests build (the bake file's TAG variable).
const TAG: &str = "sbkit-test";

/// Upper bounds of the image sizes (MB, as `docker image ls` counts). Measured with
/// release binaries: genkey 94, build-uki 98, enroll 82, sbkit-qemu 205. The fat base
/// they are cut from is 210: a tool image that kept it would fail here.
const MAX_SIZE_MB: [(&str, u64); 4] = [
    ("genkey", 150),
    ("build-uki", 150),
    ("enroll", 150),
    ("sbkit-qemu", 260),
];

/// OVMF inside sbkit-qemu (Debian's `ovmf`).
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const OVMF_VARS_MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

fn image(name: &str) -> String {
    format!("{name}:{TAG}")
}

/// Runs `f` once per test process; a failure is kept and reported to every test that
/// needs the result (the first one shows the full panic).
fn once<T: Sync + Send>(
    cell: &'static OnceLock<Result<T, String>>,
    what: &str,
    f: impl FnOnce() -> T,
) -> &'static T {
    let result = cell.get_or_init(|| {
        std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into())
        })
    });
    match result {
        Ok(value) => value,
        Err(e) => panic!("{what} failed:\n{e}"),
    }
}

/// The scratch directory of this run (emptied at the start).
fn work() -> &'static PathBuf {
    static WORK: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    once(&WORK, "making the scratch directory", || {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("images");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// The uid:gid the containers run as: the invoking user, or 4242:4242 when that is
/// root (so the tests see the images work without root and files land with that owner).
fn ids() -> (u32, u32) {
    static IDS: OnceLock<Result<(u32, u32), String>> = OnceLock::new();
    *once(&IDS, "finding the user", || {
        let probe = work().join(".probe");
        fs::write(&probe, b"").unwrap();
        let meta = fs::metadata(&probe).unwrap();
        fs::remove_file(&probe).unwrap();
        if meta.uid() == 0 {
            (4242, 4242)
        } else {
            (meta.uid(), meta.gid())
        }
    })
}

fn user() -> String {
    let (uid, gid) = ids();
    format!("{uid}:{gid}")
}

/// A fresh directory under the scratch directory, owned by the containers' user.
fn owned_dir(name: &str) -> PathBuf {
    let dir = work().join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let (uid, gid) = ids();
    if fs::metadata(&dir).unwrap().uid() != uid {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
    }
    dir
}

/// `docker run --rm --network none --user UID:GID -v …` of one of the test images.
fn docker_run(mounts: &[(&Path, &str)], img: &str, args: &[&str]) -> Command {
    docker_run_with(&[], mounts, img, args)
}

/// [`docker_run`] with more `docker run` options.
fn docker_run_with(
    options: &[&str],
    mounts: &[(&Path, &str)],
    img: &str,
    args: &[&str],
) -> Command {
    let mut cmd = Command::new(require_tool("docker"));
    cmd.args(["run", "--rm", "--network", "none", "--user"])
        .arg(user())
        .args(options);
    for (host, spec) in mounts {
        cmd.arg("-v").arg(format!("{}:{spec}", host.display()));
    }
    cmd.arg(image(img)).args(args);
    cmd
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every file under `dir` (and `dir`) belongs to `uid`.
fn assert_owned_by(dir: &Path, uid: u32) {
    let meta = fs::symlink_metadata(dir).unwrap();
    assert_eq!(
        meta.uid(),
        uid,
        "{} belongs to uid {}",
        dir.display(),
        meta.uid()
    );
    if meta.is_dir() {
        for entry in fs::read_dir(dir).unwrap() {
            assert_owned_by(&entry.unwrap().path(), uid);
        }
    }
}

/// Stripped copies of the binaries under test, for SBKIT_BIN_DIR.
fn stage_binaries() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("image-bins");
    fs::create_dir_all(&dir).unwrap();
    let strip = require_tool("strip");
    for (name, path) in [
        ("genkey", env!("CARGO_BIN_EXE_genkey")),
        ("build-uki", env!("CARGO_BIN_EXE_build-uki")),
        ("enroll", env!("CARGO_BIN_EXE_enroll")),
        ("sbkit", env!("CARGO_BIN_EXE_sbkit")),
    ] {
        let out = dir.join(name);
        let _ = fs::remove_file(&out);
        run_ok(Command::new(&strip).arg("-o").arg(&out).arg(path));
    }
    dir
}

/// The base image and the test images, made once per run (see the module docs).
fn images() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    once(&BUILT, "building the images", || {
        let docker = require_tool("docker");
        require_tool("debootstrap");
        require_tool("jq");
        let engine = Command::new(&docker)
            .args(["version", "--format", "{{.Server.Version}}"])
            .output()
            .expect("running docker");
        assert!(
            engine.status.success(),
            "the Docker engine does not answer (is dockerd running, may this user use it?):\n{}",
            String::from_utf8_lossy(&engine.stderr)
        );
        let root = repo_root();
        let started = Instant::now();
        run_ok(
            Command::new("bash")
                .arg(root.join("scripts/base-image.sh"))
                .current_dir(&root),
        );
        let base_done = started.elapsed();
        let bins = stage_binaries();
        let started = Instant::now();
        run_ok(
            Command::new("bash")
                .arg(root.join("scripts/build-images.sh"))
                .current_dir(&root)
                // Offline, from the debootstrap base, whatever the caller's environment says.
                .env(
                    "BASE",
                    std::env::var("SBKIT_BASE_IMAGE").unwrap_or("sbkit-base:bookworm".into()),
                )
                .env("SBKIT_BUILD_NETWORK", "none")
                .env("TAG", TAG)
                .env("SBKIT_BIN_DIR", &bins)
                .env_remove("SBKIT_BAKE_FILE"),
        );
        eprintln!(
            "images: base image {:.0?}, image builds {:.0?}",
            base_done,
            started.elapsed()
        );
    });
}

/// The bake file's targets as build-images.sh resolves them: name → tags.
fn bake_targets() -> Vec<(String, Vec<String>)> {
    let root = repo_root();
    let out = run_ok(
        Command::new("bash")
            .arg(root.join("scripts/build-images.sh"))
            .arg("--print")
            .current_dir(&root)
            .env("TAG", TAG)
            // The script reads the bake file through this sbkit (`images build --print`).
            .env(
                "SBKIT_BIN_DIR",
                Path::new(env!("CARGO_TARGET_TMPDIR")).join("image-bins"),
            )
            .env_remove("SBKIT_BAKE_FILE"),
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--print gives JSON");
    v["target"]
        .as_object()
        .expect("targets")
        .iter()
        .map(|(name, t)| {
            let tags = t["tags"]
                .as_array()
                .expect("tags")
                .iter()
                .map(|tag| tag.as_str().unwrap().to_string())
                .collect();
            (name.clone(), tags)
        })
        .collect()
}

fn inspect(img: &str) -> serde_json::Value {
    let out = run_ok(Command::new(require_tool("docker")).args(["image", "inspect", img]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0].clone()
}

#[test]
fn every_bake_target_builds_offline_small_with_its_entrypoint() {
    images();
    let targets = bake_targets();
    let names: Vec<&str> = targets.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), 4, "bake targets: {names:?}");
    for (name, max) in MAX_SIZE_MB {
        let (_, tags) = targets
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no bake target {name}: {names:?}"));
        assert_eq!(tags, &vec![image(name)], "tags of {name}");
        let info = inspect(&image(name));
        let size_mb = info["Size"].as_u64().unwrap() / 1_000_000;
        eprintln!("{name}: {size_mb} MB");
        assert!(size_mb <= max, "{name} is {size_mb} MB, more than {max} MB");
        let config = &info["Config"];
        assert_eq!(
            config["Labels"]["org.opencontainers.image.version"],
            env!("CARGO_PKG_VERSION"),
            "{name} version label (build-images.sh takes it from Cargo.toml)"
        );
        assert_eq!(config["WorkingDir"], "/work", "{name} working directory");
        let entrypoint = config["Entrypoint"].clone();
        if name == "sbkit-qemu" {
            assert!(entrypoint.is_null(), "sbkit-qemu has no entrypoint");
        } else {
            assert_eq!(
                entrypoint,
                serde_json::json!([format!("/usr/local/bin/{name}")]),
                "{name} entrypoint"
            );
        }
    }
    // The base the images were built from: made by debootstrap, not pulled.
    let base = inspect("sbkit-base:bookworm");
    assert!(
        base["Config"]["Labels"]["org.sbkit.base.key"].is_string(),
        "sbkit-base:bookworm carries scripts/base-image.sh's key"
    );
}

/// Copies `path` out of `img` (without running it) into `dest`.
fn copy_out(img: &str, path: &str, dest: &Path) {
    let docker = require_tool("docker");
    let id = String::from_utf8_lossy(
        &run_ok(Command::new(&docker).args(["create", &image(img)])).stdout,
    )
    .trim()
    .to_string();
    let out = Command::new(&docker)
        .args(["cp", &format!("{id}:{path}")])
        .arg(dest)
        .output()
        .unwrap();
    run_ok(Command::new(&docker).args(["rm", "-f", &id]));
    assert!(
        out.status.success(),
        "{img} has no {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_image_carries_man_pages_and_completions_of_its_binaries() {
    images();
    let man = require_tool("man");
    let bash = require_tool("bash");
    let dir = work().join("docs");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    for (img, bin, sub_page) in [
        ("genkey", "genkey", Some("genkey-token-create")),
        ("build-uki", "build-uki", Some("build-uki-inspect")),
        ("enroll", "enroll", Some("enroll-ovmf")),
        ("sbkit-qemu", "enroll", None),
        ("sbkit-qemu", "sbkit", Some("sbkit-test-boot")),
    ] {
        let d = dir.join(format!("{img}-{bin}"));
        fs::create_dir_all(&d).unwrap();
        let mut pages = vec![bin.to_string()];
        pages.extend(sub_page.map(str::to_string));
        for page in pages {
            let file = d.join(format!("{page}.1"));
            copy_out(img, &format!("/usr/share/man/man1/{page}.1"), &file);
            let text = stdout(&run_ok(
                Command::new(&man)
                    .arg("-l")
                    .arg(&file)
                    .env("MANPAGER", "cat")
                    .env("MANWIDTH", "100"),
            ));
            assert!(
                text.contains("NAME") && text.contains(&page),
                "{img}: man -l {page}.1 rendered:\n{text}"
            );
        }
        let completion = d.join(format!("{bin}.bash"));
        copy_out(
            img,
            &format!("/usr/share/bash-completion/completions/{bin}"),
            &completion,
        );
        run_ok(Command::new(&bash).arg("-n").arg(&completion));
        let zsh = d.join(format!("_{bin}"));
        copy_out(
            img,
            &format!("/usr/share/zsh/vendor-completions/_{bin}"),
            &zsh,
        );
        assert!(fs::read_to_string(&zsh)
            .unwrap()
            .starts_with(&format!("#compdef {bin}")));
        let fish = d.join(format!("{bin}.fish"));
        copy_out(
            img,
            &format!("/usr/share/fish/vendor_completions.d/{bin}.fish"),
            &fish,
        );
        assert!(fs::read_to_string(&fish)
            .unwrap()
            .contains(&format!("complete -c {bin}")));
    }
}

/// Keys made by the genkey image as the containers' user (shared by the later tests).
fn keys() -> &'static PathBuf {
    static KEYS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    once(&KEYS, "genkey in its image", || {
        images();
        let keys = owned_dir("keys");
        run_ok(&mut docker_run(
            &[(&keys, "/work/keys")],
            "genkey",
            &["Acme Corp", "-o", "/work/keys"],
        ));
        keys
    })
}

#[test]
fn genkey_image_writes_keys_owned_by_the_invoking_user() {
    let keys = keys();
    let (uid, _) = ids();
    for f in [
        "PK.key",
        "PK.pem",
        "PK.auth",
        "KEK.key",
        "KEK.auth",
        "db.key",
        "db.der",
        "db.auth",
        "tpm2-pcr-private.pem",
        "manifest.json",
    ] {
        assert!(keys.join(f).is_file(), "{f} missing in {}", keys.display());
    }
    assert_owned_by(keys, uid);
    assert_eq!(
        fs::metadata(keys.join("PK.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let subject = run_ok(
        Command::new(require_tool("openssl"))
            .args(["x509", "-noout", "-subject", "-in"])
            .arg(keys.join("PK.pem")),
    );
    assert!(
        stdout(&subject).contains("Acme Corp PK"),
        "PK subject: {}",
        stdout(&subject)
    );

    // The Kairos form: working directory /work, default output `keys`.
    let work = owned_dir("genkey-default");
    run_ok(&mut docker_run(
        &[(&work, "/work")],
        "genkey",
        &["Acme Corp"],
    ));
    assert!(work.join("keys/db.auth").is_file(), "/work/keys/db.auth");
    assert_owned_by(&work, uid);
}

/// The ISO the build-uki image made from a busybox rootfs that has no stub or systemd-boot.
fn iso() -> &'static (PathBuf, serde_json::Value) {
    static ISO: OnceLock<Result<(PathBuf, serde_json::Value), String>> = OnceLock::new();
    once(&ISO, "build-uki in its image", || {
        let keys = keys();
        let rootfs = work().join("rootfs");
        let _ = fs::remove_dir_all(&rootfs);
        busybox_rootfs(&rootfs, MARKER_INIT);
        fs::set_permissions(&rootfs, fs::Permissions::from_mode(0o755)).unwrap();
        let result = owned_dir("result");
        let out = run_ok(&mut docker_run(
            &[
                (&rootfs, "/rootfs:ro"),
                (keys, "/keys:ro"),
                (&result, "/result"),
            ],
            "build-uki",
            &[
                "dir:/rootfs",
                "-t",
                "iso",
                "-d",
                "/result",
                "-k",
                "/keys",
                "--cmdline",
                "console=ttyS0 panic=-1",
                "--loader-timeout",
                "0",
                "--json",
            ],
        ));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("build-uki --json: {e}\n{}", stdout(&out)));
        (result.join("norole.iso"), report)
    })
}

#[test]
fn build_uki_image_makes_an_iso_with_its_own_stub_and_systemd_boot() {
    let (iso, report) = iso();
    assert_eq!(
        report["stub"], "/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
        "the rootfs has no stub, so the image's is used:\n{report:#}"
    );
    assert!(
        report["stub_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("254")),
        "the image's stub is systemd-boot-efi 254 from bookworm-backports:\n{report:#}"
    );
    let sdboot = report["artifact"]["sdboot"].as_str().unwrap_or_default();
    assert!(
        sdboot.contains("/usr/lib/systemd/boot/efi/systemd-bootx64.efi"),
        "the image's systemd-boot is used: {sdboot:?}\n{report:#}"
    );
    assert_eq!(
        Path::new(report["artifact"]["path"].as_str().unwrap()),
        Path::new("/result/norole.iso")
    );
    let bytes = fs::read(iso).unwrap();
    assert_eq!(
        &bytes[0x8001..0x8006],
        b"CD001",
        "ISO 9660 volume descriptor"
    );
    assert_owned_by(iso.parent().unwrap(), ids().0);
}

#[test]
fn enroll_image_runs_enroll() {
    images();
    let out = run_ok(&mut docker_run(&[], "enroll", &["--help"]));
    assert!(
        stdout(&out).contains("Usage: enroll"),
        "enroll --help:\n{}",
        stdout(&out)
    );
}

/// A variable store made by `enroll ovmf` inside sbkit-qemu from the image's OVMF template.
fn vars() -> &'static PathBuf {
    static VARS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    once(&VARS, "enroll ovmf in sbkit-qemu", || {
        let keys = keys();
        let out = owned_dir("vars");
        run_ok(&mut docker_run(
            &[(keys, "/keys:ro"), (&out, "/out")],
            "sbkit-qemu",
            &[
                "enroll",
                "ovmf",
                "--template",
                OVMF_VARS,
                "-k",
                "/keys",
                "-o",
                "/out/vars.fd",
            ],
        ));
        out.join("vars.fd")
    })
}

#[test]
fn sbkit_qemu_image_has_qemu_swtpm_ovmf_and_makes_a_variable_store() {
    images();
    let qemu = run_ok(&mut docker_run(
        &[],
        "sbkit-qemu",
        &["qemu-system-x86_64", "--version"],
    ));
    assert!(
        stdout(&qemu).contains("QEMU emulator version"),
        "{}",
        stdout(&qemu)
    );
    let swtpm = run_ok(&mut docker_run(&[], "sbkit-qemu", &["swtpm", "--version"]));
    assert!(
        stdout(&swtpm).contains("TPM emulator"),
        "{}",
        stdout(&swtpm)
    );
    run_ok(&mut docker_run(
        &[],
        "sbkit-qemu",
        &[
            "test",
            "-f",
            OVMF_CODE,
            "-a",
            "-f",
            OVMF_VARS,
            "-a",
            "-f",
            OVMF_VARS_MS,
        ],
    ));

    let vars = vars();
    assert_owned_by(vars, ids().0);
    // Judged by virt-fw-vars on the host, not by our code.
    let printout = print_vars(vars);
    assert!(
        printout
            .lines()
            .any(|l| l.starts_with("SecureBootEnable") && l.contains("ON")),
        "Secure Boot is on in the store:\n{printout}"
    );
    let names = var_names(&printout);
    for want in ["PK", "KEK", "db"] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing in the store:\n{printout}"
        );
    }
}

#[test]
fn iso_from_the_build_uki_image_boots_in_sbkit_qemu_with_secure_boot_and_swtpm() {
    let (iso, _) = iso();
    let vars = vars();
    let vm = owned_dir("vm");
    fs::copy(iso, vm.join("norole.iso")).unwrap();
    fs::copy(vars, vm.join("vars.fd")).unwrap();
    let (uid, gid) = ids();
    for f in ["norole.iso", "vars.fd"] {
        std::os::unix::fs::chown(vm.join(f), Some(uid), Some(gid)).unwrap();
    }
    let spec = BootSpec::new(
        Firmware {
            code: OVMF_CODE.into(),
            vars_template: OVMF_VARS.into(),
        },
        Path::new("/vm/vars.fd"),
        Media::Cdrom("/vm/norole.iso".into()),
        Path::new("/vm/serial.log"),
    );
    let socket = "/tmp/tpm/swtpm.sock";
    let script = format!(
        "set -e; mkdir -p /tmp/tpm; \
         swtpm socket --tpm2 --tpmstate dir=/tmp/tpm --ctrl type=unixio,path={socket} \
           --log file=/vm/swtpm.log,level=1 --daemon; \
         i=0; while [ ! -S {socket} ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; \
         exec qemu-system-x86_64 \"$@\""
    );
    let name = format!("sbkit-test-boot-{}", std::process::id());
    let mut cmd = docker_run_with(
        &["--name", &name],
        &[(&vm, "/vm")],
        "sbkit-qemu",
        &["sh", "-c", &script, "sh"],
    );
    cmd.args(spec.qemu_args(Some(Path::new(socket))));
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    let docker = require_tool("docker");
    cmd.stderr(fs::File::create(work().join("vm-stderr.log")).unwrap());

    let started = Instant::now();
    let mut child = cmd.spawn().expect("starting docker run");
    let serial = vm.join("serial.log");
    let read_serial =
        || String::from_utf8_lossy(&fs::read(&serial).unwrap_or_default()).replace('\r', "");
    let timeout = Duration::from_secs(300);
    let (passed, failed, exit) = loop {
        // Read after checking for exit, so the last lines of an exited QEMU are seen.
        let status = child.try_wait().unwrap();
        let log = read_serial();
        let passed = log.lines().any(|l| l.contains(MARK_PASS));
        let failed = log
            .lines()
            .find(|l| DEFAULT_FAILURE_MARKERS.iter().any(|m| l.contains(m)))
            .map(str::to_string);
        if let Some(status) = status {
            break (passed, failed, status.to_string());
        }
        if passed || failed.is_some() || started.elapsed() > timeout {
            let _ = Command::new(&docker).args(["kill", &name]).output();
            let _ = child.wait();
            break (passed, failed, "stopped".into());
        }
        thread::sleep(Duration::from_millis(200));
    };
    let log = read_serial();
    let context = format!(
        "after {:.0?}, docker run: {exit}\ncommand: {cmd:?}\nstderr: {}\nserial log tail:\n{}",
        started.elapsed(),
        fs::read_to_string(work().join("vm-stderr.log")).unwrap_or_default(),
        log.lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(failed.is_none(), "boot failed: {failed:?}\n{context}");
    assert!(passed, "the guest did not reach its marker\n{context}");
    let pcr = log
        .lines()
        .find_map(|l| l.trim().strip_prefix("SBKIT-PCR pcr11="))
        .unwrap_or("none");
    assert!(
        pcr != "none" && pcr.len() == 64,
        "the guest has a TPM (swtpm) with PCR 11 measured: {pcr:?}\n{context}"
    );
    eprintln!("boot in sbkit-qemu: marker after {:.0?}", started.elapsed());
}

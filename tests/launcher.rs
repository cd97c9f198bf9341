//! The launcher's containers as the engine sees them (`docker inspect` is
//! the judge): exactly the mounts the arguments name, with the right modes,
//! in any argument order; output files through a directory of their own;
//! the caller's user and working directory; only the token's own device and
//! no USB cgroup rule; no network for tools that need none.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::tools::{require_tool, run_ok};
use sbkit::launcher::run::TokenAccess;

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

/// `(Source, Destination, RW)` of every mount of an inspected container, sorted.
fn mounts_of(info: &serde_json::Value) -> Vec<(String, String, bool)> {
    let mut out: Vec<(String, String, bool)> = info["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["Source"].as_str().unwrap().to_string(),
                m["Destination"].as_str().unwrap().to_string(),
                m["RW"].as_bool().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Where a host path under /tmp appears in a tool container.
fn inside(p: &Path) -> String {
    if p.starts_with("/tmp") || p.starts_with("/usr") {
        format!("/host{}", p.display())
    } else {
        p.display().to_string()
    }
}

/// A mount of `p` at its container path.
fn m(p: &Path, rw: bool) -> (String, String, bool) {
    (p.display().to_string(), inside(p), rw)
}

fn sorted(mut v: Vec<(String, String, bool)>) -> Vec<(String, String, bool)> {
    v.sort();
    v
}

#[test]
fn containers_get_exactly_the_named_mounts_the_token_device_and_no_network() {
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path();
    std::fs::create_dir_all(cwd.join("rootfs")).unwrap();
    std::fs::create_dir_all(cwd.join("keys")).unwrap();
    std::fs::write(cwd.join("keys/db.pem"), b"").unwrap();
    // Flags first, the order issue 10 found broken.
    let args: Vec<String> = [
        "-t",
        "iso",
        "-d",
        "build",
        "-k",
        "keys",
        "--sb-key",
        "pkcs11:token=mkosi;id=%02;type=private",
        "--sb-cert=keys/db.pem",
        "dir:rootfs",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut spec = sbkit::launcher::plan("build-uki", &args, cwd, false, false).expect("plan");
    spec.image = some_image();
    // A pkcs11: URI asks for token access by itself.
    assert_ne!(spec.token, TokenAccess::None);
    spec.token = TokenAccess::Usb(vec![PathBuf::from("/dev/null")]);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let create = |spec: &sbkit::launcher::run::RunSpec| {
        rt.block_on(async {
            let docker = sbkit::engine::connect().await.expect("engine");
            let id = sbkit::launcher::run::create(&docker, spec, &[])
                .await
                .expect("create");
            let info = inspect(&id);
            sbkit::launcher::run::remove(&docker, &id).await;
            info
        })
    };
    let info = create(&spec);

    let user = format!("{}:{}", nix::unistd::getuid(), nix::unistd::getgid());
    assert_eq!(info["Config"]["User"], user);
    // The work directory is under /tmp, the container's own scratch space: it moves below /host.
    assert!(cwd.starts_with("/tmp"), "tempdir is expected under /tmp");
    assert_eq!(info["Config"]["WorkingDir"], inside(cwd));
    let cmd: Vec<String> = serde_json::from_value(info["Config"]["Cmd"].clone()).unwrap();
    assert_eq!(
        cmd.last().unwrap(),
        &format!("dir:{}", inside(&cwd.join("rootfs")))
    );
    assert!(cmd.contains(&"pkcs11:token=mkosi;id=%02;type=private".to_string()));
    assert!(cmd.contains(&format!("--sb-cert={}", inside(&cwd.join("keys/db.pem")))));
    assert_eq!(
        mounts_of(&info),
        sorted(vec![
            m(&cwd.join("rootfs"), false),
            m(&cwd.join("keys"), false),
            m(&cwd.join("keys/db.pem"), false),
            m(&cwd.join("build"), true),
        ]),
        "exactly what the arguments name: inputs read-only, the output directory writable, \
         not the working directory"
    );
    let devices = info["HostConfig"]["Devices"].as_array().unwrap();
    let hosts: Vec<&str> = devices
        .iter()
        .map(|d| d["PathOnHost"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["/dev/null"], "only the token's own device");
    let rules = &info["HostConfig"]["DeviceCgroupRules"];
    assert!(
        rules.is_null() || rules.as_array().is_some_and(|r| r.is_empty()),
        "no cgroup rule for the whole USB bus: {rules}"
    );
    assert_eq!(info["HostConfig"]["NetworkMode"], "none");
    assert_eq!(info["Config"]["Labels"]["org.sbkit.tool"], "build-uki");

    // The pcscd route: its socket, nothing else of /run/pcscd.
    let socket = cwd.join("pcscd.comm");
    std::fs::write(&socket, b"").unwrap();
    spec.token = TokenAccess::PcscdSocket(socket.clone());
    let info = create(&spec);
    assert!(
        mounts_of(&info).contains(&(
            socket.display().to_string(),
            socket.display().to_string(),
            true
        )),
        "{:?}",
        mounts_of(&info)
    );
    assert_eq!(mounts_of(&info).len(), 5);
    assert!(info["HostConfig"]["Devices"]
        .as_array()
        .is_none_or(|d| d.is_empty()));
}

/// Runs `sbkit ARGS` in `cwd` keeping the tool's container; returns the
/// output and `docker inspect` of the container (then removed).
fn sbkit_kept(cwd: &Path, args: &[String]) -> (std::process::Output, serde_json::Value) {
    sbkit_kept_with(cwd, args, &[])
}

/// [`sbkit_kept`] with `env` set in the launcher's environment.
fn sbkit_kept_with(
    cwd: &Path,
    args: &[String],
    env: &[(&str, &str)],
) -> (std::process::Output, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_sbkit"))
        .args(args)
        .current_dir(cwd)
        .env(sbkit::launcher::run::KEEP_ENV, "1")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let id = stderr
        .lines()
        .find_map(|l| l.strip_prefix("sbkit: kept container "))
        .unwrap_or_else(|| panic!("no kept container in:\n{stderr}"))
        .trim()
        .to_string();
    let info = inspect(&id);
    run_ok(Command::new(require_tool("docker")).args(["rm", "-f", &id]));
    (out, info)
}

#[test]
fn build_uki_through_sbkit_in_any_order_mounts_exactly_what_it_names() {
    require_image("build-uki");
    let (work, keys, root) = launcher_fixture();
    let w = work.path();
    let stub = common::guest::Assets::locate().stub(254);
    let st = stub.display().to_string();
    let orders: [Vec<String>; 3] = [
        // Issue 10's line: flags first. The old launcher took -t's value for the image.
        [
            "-t",
            "uki",
            "-d",
            "out1",
            "-k",
            "keys",
            "--stub",
            &st,
            "dir:rootfs",
        ]
        .map(String::from)
        .to_vec(),
        [
            "dir:rootfs",
            "--output-type=uki",
            "--output-dir=out2",
            "--keys=keys",
            &format!("--stub={st}"),
        ]
        .map(String::from)
        .to_vec(),
        ["-tuki", "-dout3", "--stub", &st, "dir:rootfs", "-kkeys"]
            .map(String::from)
            .to_vec(),
    ];
    for (i, order) in orders.iter().enumerate() {
        let out_dir = w.join(format!("out{}", i + 1));
        let mut args = vec!["build-uki".to_string()];
        args.extend(order.iter().cloned());
        args.extend(["--cmdline".to_string(), "console=ttyS0".to_string()]);
        let (out, info) = sbkit_kept(w, &args);
        assert!(
            out.status.success(),
            "{args:?}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        run_ok(
            Command::new(require_tool("sbverify"))
                .arg("--cert")
                .arg(keys.join("db.pem"))
                .arg(out_dir.join("norole.efi")),
        );
        assert_eq!(
            mounts_of(&info),
            sorted(vec![
                m(&root, false),
                m(&keys, false),
                m(&stub, false),
                m(&out_dir, true),
            ]),
            "{args:?}"
        );
        assert_eq!(info["HostConfig"]["NetworkMode"], "none", "{args:?}");
        assert!(info["HostConfig"]["Devices"]
            .as_array()
            .is_none_or(|d| d.is_empty()));
    }
}

#[test]
fn enroll_output_files_go_through_a_directory_of_their_own() {
    require_image("enroll");
    let (work, _keys, _root) = launcher_fixture();
    let w = work.path();
    let template = Path::new("/usr/share/OVMF/OVMF_VARS_4M.fd");
    assert!(template.is_file(), "install Debian's ovmf package");
    std::fs::create_dir_all(w.join("out")).unwrap();
    std::fs::write(w.join("out/unrelated"), b"not for the tool").unwrap();
    let args: Vec<String> = [
        "enroll",
        "ovmf",
        "-o",
        "out/vars.fd",
        "--template",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
        "--keys=keys",
    ]
    .map(String::from)
    .to_vec();
    let (out, info) = sbkit_kept(w, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mounts = mounts_of(&info);
    assert_eq!(mounts.len(), 3, "{mounts:?}");
    assert!(mounts.contains(&m(template, false)), "{mounts:?}");
    assert!(mounts.contains(&m(&w.join("keys"), false)), "{mounts:?}");
    let staged = mounts
        .iter()
        .find(|(_, dest, rw)| *rw && dest == &inside(&w.join("out")))
        .unwrap_or_else(|| panic!("no writable mount at out/: {mounts:?}"));
    assert!(
        Path::new(&staged.0)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".sbkit-out-"),
        "out/ itself is not mounted, a directory made for the output is: {staged:?}"
    );
    assert_eq!(info["HostConfig"]["NetworkMode"], "none");
    // The store landed where asked, the staging directory is gone.
    let names = common::qemu::var_names(&common::qemu::print_vars(&w.join("out/vars.fd")));
    assert!(names.iter().any(|n| n == "PK"), "{names:?}");
    let left: Vec<String> = std::fs::read_dir(w.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(sorted_names(left), ["unrelated", "vars.fd"]);
}

fn sorted_names(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn a_grammar_error_is_shown_as_clap_shows_it() {
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sbkit"))
        .args(["build-uki", "dir:rootfs", "--output-type"])
        .current_dir(work.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("a value is required for '--output-type <OUTPUT_TYPE>'"),
        "{err}"
    );
    assert!(!err.contains("not in the local engine"), "{err}");
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

/// A secret the user hands over as `env:VAR` reaches the tool in its
/// container (the run succeeds only if it does), and no other variable of
/// the caller's environment does.
#[test]
fn a_secret_named_as_env_var_reaches_the_container_and_nothing_else_does() {
    require_image("genkey");
    let work = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "genkey",
        "Acme Corp",
        "--layout",
        "hardened",
        "--passphrase",
        "env:LAUNCHED_BACKUP_PASS",
        "-o",
        "keys",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (out, info) = sbkit_kept_with(
        work.path(),
        &args,
        &[
            ("LAUNCHED_BACKUP_PASS", "a launcher passphrase long enough"),
            ("UNRELATED_CLOUD_TOKEN", "must-not-leak"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(work
        .path()
        .join("keys")
        .join(sbkit::store::hardened::encrypted_key(
            sbkit::store::layout::Role::Db
        ))
        .is_file());
    let env: Vec<String> = serde_json::from_value(info["Config"]["Env"].clone()).unwrap();
    assert!(
        env.contains(&"LAUNCHED_BACKUP_PASS=a launcher passphrase long enough".to_string()),
        "{env:?}"
    );
    assert!(!env.iter().any(|e| e.contains("must-not-leak")), "{env:?}");

    // test-boot signs nothing: a token for it is refused, not ignored.
    let out = Command::new(env!("CARGO_BIN_EXE_sbkit"))
        .args(["--token", "test-boot", "x.efi", "-k", "keys"])
        .current_dir(work.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("test-boot signs nothing"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

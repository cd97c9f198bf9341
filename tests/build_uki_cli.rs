//! build-uki as a user meets it: entries, reproducibility, inspect, refusals,
//! and its PCR 11 prediction checked by systemd-measure 254.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::guest::Assets;
use common::rootfs::{busybox_rootfs, MARKER_INIT};
use common::tools::{genkey, our_bin, require_tool, run_fails, run_ok};

fn stub254() -> String {
    Assets::locate().stub(254).display().to_string()
}

fn fixture(w: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let keys = w.join("keys");
    genkey("Acme Corp", &keys, &[]);
    let root = w.join("rootfs");
    busybox_rootfs(&root, MARKER_INIT);
    (keys, root)
}

fn build_uki(root: &Path, keys: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = our_bin("build-uki");
    c.arg(format!("dir:{}", root.display()))
        .args(["-t", "uki", "--stub", &stub254(), "-d"])
        .arg(out)
        .arg("-k")
        .arg(keys)
        .args(extra);
    c
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn entries_follow_the_kairos_flags() {
    let work = tempfile::tempdir().unwrap();
    let (keys, root) = fixture(work.path());
    let out = work.path().join("build");
    run_ok(&mut build_uki(
        &root,
        &keys,
        &out,
        &[
            "--boot-branding",
            "My OS",
            "--include-version-in-config",
            "--include-cmdline-in-config",
            "--extend-cmdline",
            "quiet",
            "--single-efi-cmdline",
            "Debug: rd.debug rd.shell",
        ],
    ));
    assert_eq!(
        files(&out),
        [
            "norole.conf",
            "norole.efi",
            "norole_debug.conf",
            "norole_debug.efi"
        ]
    );
    let conf = fs::read_to_string(out.join("norole_debug.conf")).unwrap();
    assert_eq!(
        conf,
        "title My OS (Debug)\nefi /EFI/kairos/norole_debug.efi\nversion 1.0\ncmdline console=tty1 console=ttyS0 quiet rd.debug rd.shell\n"
    );
    let main = fs::read_to_string(out.join("norole.conf")).unwrap();
    assert!(
        main.contains("cmdline console=tty1 console=ttyS0 quiet\n"),
        "{main}"
    );
    let inspect = run_ok(
        our_bin("build-uki")
            .args(["inspect", "--json", "--keys"])
            .arg(&keys)
            .arg(out.join("norole_debug.efi")),
    );
    let r: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(
        r["cmdline"],
        "console=tty1 console=ttyS0 quiet rd.debug rd.shell"
    );
    assert_eq!(r["signature"]["valid"], true);
    assert_eq!(r["pcrsig"]["ok"], true);
    assert_eq!(r["uname"], Assets::locate().kernel_release());
}

#[test]
fn same_source_date_epoch_gives_a_byte_identical_uki() {
    let work = tempfile::tempdir().unwrap();
    let (keys, root) = fixture(work.path());
    for out in ["a", "b"] {
        run_ok(
            build_uki(&root, &keys, &work.path().join(out), &[])
                .env("SOURCE_DATE_EPOCH", "1700000000"),
        );
    }
    assert_eq!(
        fs::read(work.path().join("a/norole.efi")).unwrap(),
        fs::read(work.path().join("b/norole.efi")).unwrap(),
        "two builds differ"
    );
}

#[test]
fn inspect_catches_a_changed_byte_and_a_foreign_certificate() {
    let work = tempfile::tempdir().unwrap();
    let (keys, root) = fixture(work.path());
    let out = work.path().join("build");
    run_ok(&mut build_uki(&root, &keys, &out, &[]));
    let efi = out.join("norole.efi");
    let other = work.path().join("other");
    genkey("Other", &other, &[]);
    let stderr_or_out = |c: &mut Command| {
        let o = c.output().unwrap();
        assert!(!o.status.success(), "inspect must fail: {c:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let text = stderr_or_out(
        our_bin("build-uki")
            .args(["inspect", "--keys"])
            .arg(&other)
            .arg(&efi),
    );
    assert!(text.contains("signature: INVALID"), "{text}");

    let uki = fs::read(&efi).unwrap();
    let layout = sbkit::pe::PeLayout::parse(&uki).unwrap();
    let at = layout.section(".cmdline").unwrap().pointer_to_raw_data as usize;
    let mut tampered = uki.clone();
    tampered[at] ^= 0x01;
    let bad = work.path().join("tampered.efi");
    fs::write(&bad, &tampered).unwrap();
    let text = stderr_or_out(
        our_bin("build-uki")
            .args(["inspect", "--keys"])
            .arg(&keys)
            .arg(&bad),
    );
    assert!(
        text.contains("signature: INVALID") && text.contains("DOES NOT MATCH"),
        "{text}"
    );
    let sbverify = Command::new(require_tool("sbverify"))
        .arg("--cert")
        .arg(keys.join("db.pem"))
        .arg(&bad)
        .output()
        .unwrap();
    assert!(
        !sbverify.status.success(),
        "sbverify accepts the changed .cmdline"
    );
}

#[test]
fn kernel_initrd_and_os_release_without_a_rootfs() {
    let work = tempfile::tempdir().unwrap();
    let (keys, _) = fixture(work.path());
    let initrd = work.path().join("initrd.img");
    fs::write(&initrd, b"not really an initrd").unwrap();
    let osrel = work.path().join("os-release");
    fs::write(&osrel, "NAME=Plain\n").unwrap();
    let out = work.path().join("build");
    run_ok(
        our_bin("build-uki")
            .arg("--kernel")
            .arg(Assets::locate().kernel())
            .arg("--initrd")
            .arg(&initrd)
            .arg("--os-release")
            .arg(&osrel)
            .args([
                "--cmdline",
                "root=/dev/vda ro",
                "-t",
                "uki",
                "--stub",
                &stub254(),
                "-d",
            ])
            .arg(&out)
            .arg("-k")
            .arg(&keys),
    );
    let r: serde_json::Value = serde_json::from_slice(
        &run_ok(
            our_bin("build-uki")
                .args(["inspect", "--json"])
                .arg(out.join("norole.efi")),
        )
        .stdout,
    )
    .unwrap();
    assert_eq!(r["cmdline"], "root=/dev/vda ro");
    let initrd_section = r["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == ".initrd")
        .unwrap();
    assert_eq!(initrd_section["size"], 20, "the given initrd is used as is");
}

#[test]
fn systemd_measure_254_agrees_with_the_reported_pcr11() {
    let work = tempfile::tempdir().unwrap();
    let (keys, root) = fixture(work.path());
    let out = work.path().join("build");
    let o =
        run_ok(build_uki(&root, &keys, &out, &["--json"]).env("SOURCE_DATE_EPOCH", "1700000000"));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let efi = out.join("norole.efi");
    let sections = work.path().join("sections");
    fs::create_dir(&sections).unwrap();
    let args = measure_args(
        &efi,
        &[
            "linux", "osrel", "cmdline", "initrd", "uname", "sbat", "pcrpkey",
        ],
        &sections,
    );
    let root254 = Assets::locate().systemd_root(254);
    let measure = root254.join("lib/systemd/systemd-measure");
    assert!(
        measure.exists(),
        "{} missing: run scripts/fetch-assets.sh",
        measure.display()
    );
    let calc = run_ok(
        Command::new(&measure)
            .env(
                "LD_LIBRARY_PATH",
                root254.join("usr/lib/x86_64-linux-gnu/systemd"),
            )
            .arg("calculate")
            .args(&args)
            .args(["--bank=sha256", "--bank=sha384", "--phase="]),
    );
    let text = String::from_utf8_lossy(&calc.stdout);
    for (bank, value) in report["entries"][0]["pcr11"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap(), p[1].as_str().unwrap()))
    {
        if bank == "sha256" || bank == "sha384" {
            assert!(
                text.contains(&format!("11:{bank}={value}")),
                "systemd-measure disagrees on {bank}:\n{text}"
            );
        }
    }
}

#[test]
fn bad_inputs_are_clear_errors_and_leave_no_efi() {
    let work = tempfile::tempdir().unwrap();
    let (keys, root) = fixture(work.path());
    let out = work.path().join("build");

    // No kernel in the rootfs.
    let bare = work.path().join("bare");
    fs::create_dir_all(bare.join("etc")).unwrap();
    fs::write(bare.join("etc/os-release"), "NAME=x\n").unwrap();
    let err = run_fails(&mut build_uki(&bare, &keys, &out, &[]));
    assert!(
        err.contains("no kernel") && err.contains("/boot/vmlinuz*"),
        "{err}"
    );

    // A kernel that is not a PE image.
    let text_kernel = work.path().join("vmlinuz.txt");
    fs::write(&text_kernel, "not a kernel").unwrap();
    let err = run_fails(
        build_uki(&root, &keys, &out, &[])
            .arg("--kernel")
            .arg(&text_kernel),
    );
    assert!(
        err.contains("is not a PE image") && err.contains("EFI stub"),
        "{err}"
    );

    // A signed stub.
    let db = sbkit::keys::FileSigner::load(&keys.join("db.key")).unwrap();
    let signed = sbkit::pe::authenticode::sign(
        &fs::read(stub254()).unwrap(),
        &db,
        &fs::read(keys.join("db.der")).unwrap(),
        sbkit::keys::DigestAlgorithm::Sha256,
    )
    .unwrap();
    let signed_stub = work.path().join("signed.stub");
    fs::write(&signed_stub, signed).unwrap();
    let mut c = our_bin("build-uki");
    c.arg(format!("dir:{}", root.display()))
        .args(["-t", "uki", "-d"])
        .arg(&out)
        .arg("-k")
        .arg(&keys)
        .arg("--stub")
        .arg(&signed_stub);
    let err = run_fails(&mut c);
    assert!(err.contains("already signed"), "{err}");

    // A key directory without keys.
    let empty = work.path().join("empty-keys");
    fs::create_dir(&empty).unwrap();
    let err = run_fails(&mut build_uki(&root, &empty, &out, &[]));
    assert!(err.contains("db.key is missing"), "{err}");

    // An output directory that cannot be written.
    let err = run_fails(&mut build_uki(
        &root,
        &keys,
        Path::new("/proc/sbkit-out"),
        &[],
    ));
    assert!(err.contains("cannot write /proc/sbkit-out"), "{err}");

    // Exclusive flags.
    let err = run_fails(&mut build_uki(
        &root,
        &keys,
        &out,
        &["--extend-cmdline", "a", "--extra-cmdline", "b"],
    ));
    assert!(err.contains("cannot be used with"), "{err}");

    // A malformed --single-efi-cmdline.
    let err = run_fails(&mut build_uki(
        &root,
        &keys,
        &out,
        &["--single-efi-cmdline", "no title here"],
    ));
    assert!(err.contains("Title: arguments"), "{err}");

    assert!(
        files(&out).iter().all(|f| !f.ends_with(".efi")),
        "no .efi may be left: {:?}",
        files(&out)
    );
}

/// Every file below `dir`, as paths relative to it.
fn all_files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(base, &p, out);
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, dir, &mut v);
    v.sort();
    v
}

#[test]
fn a_failure_on_the_second_entry_leaves_no_output_at_all() {
    let work = tempfile::tempdir().unwrap();
    let (keys, root) = fixture(work.path());
    let out = work.path().join("build");
    // The second entry's file cannot be written: a directory holds its name.
    // (Before the build was one transaction, norole.efi and norole.conf
    // stayed behind while the message said nothing was.)
    fs::create_dir_all(out.join("norole_debug.efi/keep")).unwrap();
    let err = run_fails(&mut build_uki(
        &root,
        &keys,
        &out,
        &["--single-efi-cmdline", "Debug: rd.debug"],
    ));
    assert_eq!(
        all_files(&out),
        ["norole_debug.efi", "norole_debug.efi/keep"],
        "only what was there before may remain (no entry, no staging files): {err}"
    );
    assert!(
        err.contains("norole_debug.efi exists and is not a regular file")
            && err.contains("no output of this run was left behind"),
        "{err}"
    );

    // A run refused when its entries are planned (two titles that make one
    // name), into an output directory that did not exist: not even the
    // directory is left.
    let fresh = work.path().join("fresh/out");
    let err = run_fails(&mut build_uki(
        &root,
        &keys,
        &fresh,
        &[
            "--single-efi-cmdline",
            "Debug: rd.debug",
            "--single-efi-cmdline",
            "debug: rd.shell",
        ],
    ));
    assert!(err.contains("norole_debug"), "{err}");
    assert!(
        !fresh.exists(),
        "{:?}",
        all_files(&work.path().join("fresh"))
    );

    // The same run, repaired, writes every output together.
    fs::remove_dir_all(out.join("norole_debug.efi")).unwrap();
    run_ok(&mut build_uki(
        &root,
        &keys,
        &out,
        &["--single-efi-cmdline", "Debug: rd.debug"],
    ));
    assert_eq!(
        files(&out),
        [
            "norole.conf",
            "norole.efi",
            "norole_debug.conf",
            "norole_debug.efi"
        ]
    );
}

#[test]
fn names_and_lines_that_would_escape_or_inject_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let (keys, root) = fixture(work.path());
    let out = work.path().join("a/b/build");
    let cases: &[(&[&str], &str)] = &[
        (&["-n", "../../escape"], "path separator"),
        (&["-t", "iso", "-n", "../../escape"], "path separator"),
        (&["-t", "container", "-n", "../escape"], "path separator"),
        (&["-n", ".."], "starts with '.'"),
        (&["-n", "a\nb"], "contains '\\n'"),
        (
            &["--boot-branding", "My OS\nefi /EFI/evil.efi"],
            "control character '\\n'",
        ),
        (
            &[
                "--include-cmdline-in-config",
                "--cmdline",
                "quiet\nefi /EFI/evil.efi",
            ],
            "control character '\\n'",
        ),
        (
            &[
                "--include-cmdline-in-config",
                "--extra-cmdline",
                "rd.debug\r\nefi /EFI/evil.efi",
            ],
            "control character '\\r'",
        ),
        (
            &["--single-efi-cmdline", "Debug\nefi /x.efi: rd.debug"],
            "control character '\\n'",
        ),
    ];
    for (flags, why) in cases {
        let mut c = our_bin("build-uki");
        c.arg(format!("dir:{}", root.display()))
            .args(["--stub", &stub254(), "-d"])
            .arg(&out)
            .arg("-k")
            .arg(&keys)
            .args(*flags);
        if !flags.contains(&"-t") {
            c.args(["-t", "uki"]);
        }
        let err = run_fails(&mut c);
        assert!(err.contains(why), "{flags:?}: {err}");
        assert!(
            err.contains("; use letters") || err.contains("; write it on one line"),
            "{flags:?}: the message must say how to fix it: {err}"
        );
    }
    let escaped: Vec<String> = all_files(work.path())
        .into_iter()
        .filter(|f| f.contains("escape") || f.contains("evil") || f.ends_with(".efi"))
        .collect();
    assert!(escaped.is_empty(), "written: {escaped:?}");
    assert!(!out.exists(), "{:?}", all_files(&work.path().join("a")));
}

#[test]
fn a_command_line_over_the_kernel_limit_is_built_with_a_warning() {
    let work = tempfile::tempdir().unwrap();
    let (keys, root) = fixture(work.path());
    let out = work.path().join("build");
    let long = format!("console=ttyS0 {}", "x".repeat(2100));
    let run = run_ok(&mut build_uki(&root, &keys, &out, &["--cmdline", &long]));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("warning:") && stderr.contains("2047 bytes"),
        "{stderr}"
    );
    // A short one gets no such warning.
    let run = run_ok(&mut build_uki(&root, &keys, &out, &["--cmdline", "quiet"]));
    assert!(
        !String::from_utf8_lossy(&run.stderr).contains("2047 bytes"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// Extracts the sections `names` (without the dot) of `efi` into `dir` with
/// objcopy and returns systemd-measure's `--NAME=FILE` arguments for them.
fn measure_args(efi: &Path, names: &[&str], dir: &Path) -> Vec<String> {
    names
        .iter()
        .map(|name| {
            let file = dir.join(name);
            run_ok(
                Command::new(require_tool("objcopy"))
                    .args(["-O", "binary", &format!("--only-section=.{name}")])
                    .arg(efi)
                    .arg(&file),
            );
            format!("--{name}={}", file.display())
        })
        .collect()
}

/// The `.pcrsig` build-uki embedded, as JSON (the section is NUL-padded).
fn embedded_pcrsig(efi: &Path, dir: &Path) -> serde_json::Value {
    let out = dir.join("pcrsig.json");
    run_ok(
        Command::new(require_tool("objcopy"))
            .args(["-O", "binary", "--only-section=.pcrsig"])
            .arg(efi)
            .arg(&out),
    );
    let bytes = fs::read(&out).unwrap();
    serde_json::from_slice(bytes.split(|&b| b == 0).next().unwrap()).expect(".pcrsig is JSON")
}

/// Without `--phases`, build-uki signs what the booted rootfs will measure: the
/// host-mode paths (the empty path, where crypttab volumes attach, then
/// sysinit and sysinit:ready) for a rootfs without
/// /etc/initrd-release, ukify's four initrd paths for one with it. systemd-measure
/// 254 signs the same paths over the sections objcopy extracts and gives the same
/// entries, on the 252 and the 254 stub; inspect checks the policy against the
/// paths that were signed and names them.
#[test]
fn signed_phases_follow_the_boot_model_on_both_stubs() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let (keys, root) = fixture(w);
    let initrd_root = w.join("rootfs-initrd");
    busybox_rootfs(&initrd_root, MARKER_INIT);
    fs::write(
        initrd_root.join("etc/initrd-release"),
        "ID=sbkit-test-initrd\n",
    )
    .unwrap();
    let root254 = Assets::locate().systemd_root(254);
    let cases: [(&Path, u32, &[&str]); 3] = [
        (&root, 252, &["", "sysinit", "sysinit:ready"]),
        (&root, 254, &["", "sysinit", "sysinit:ready"]),
        (
            &initrd_root,
            254,
            &[
                "enter-initrd",
                "enter-initrd:leave-initrd",
                "enter-initrd:leave-initrd:sysinit",
                "enter-initrd:leave-initrd:sysinit:ready",
            ],
        ),
    ];
    for (i, (rootfs, generation, expected)) in cases.into_iter().enumerate() {
        let out = w.join(format!("build-{i}"));
        let stub = Assets::locate().stub(generation).display().to_string();
        let o = run_ok(
            our_bin("build-uki")
                .arg(format!("dir:{}", rootfs.display()))
                .args(["-t", "uki", "--json", "--stub", &stub, "-d"])
                .arg(&out)
                .arg("-k")
                .arg(&keys),
        );
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            report["phases"]["paths"],
            serde_json::json!(expected),
            "case {i}: {}",
            report["phases"]
        );
        let efi = out.join("norole.efi");
        let names: Vec<&str> = report["measured_sections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().trim_start_matches('.'))
            .collect();
        let sections = out.join("sections");
        fs::create_dir(&sections).unwrap();
        let args = measure_args(&efi, &names, &sections);
        let theirs = run_ok(
            Command::new(root254.join("lib/systemd/systemd-measure"))
                .env(
                    "LD_LIBRARY_PATH",
                    root254.join("usr/lib/x86_64-linux-gnu/systemd"),
                )
                .arg("sign")
                .args(&args)
                .arg(format!(
                    "--private-key={}",
                    keys.join("tpm2-pcr-private.pem").display()
                ))
                .arg(format!(
                    "--public-key={}",
                    keys.join("tpm2-pcr-public.pem").display()
                ))
                .args([
                    "--bank=sha1",
                    "--bank=sha256",
                    "--bank=sha384",
                    "--bank=sha512",
                ])
                .args(expected.iter().map(|p| format!("--phase={p}"))),
        );
        let theirs: serde_json::Value = serde_json::from_slice(&theirs.stdout).unwrap();
        assert_eq!(
            embedded_pcrsig(&efi, &out),
            theirs,
            "case {i} ({generation} stub): our .pcrsig vs systemd-measure sign"
        );
        let inspect = run_ok(
            our_bin("build-uki")
                .args(["inspect", "--json"])
                .arg(&efi)
                .arg("--keys")
                .arg(&keys),
        );
        let inspect: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
        assert_eq!(inspect["pcrsig"]["ok"], true, "case {i}: {inspect}");
        assert_eq!(
            inspect["pcrsig"]["signed_phases"],
            serde_json::json!(expected),
            "case {i}"
        );
    }
}

//! build-uki -t container: the archive loads into the real Docker engine and
//! the image's filesystem holds exactly the UKIs and entries.

mod common;

use std::fs;
use std::process::Command;

use common::guest::Assets;
use common::rootfs::{busybox_rootfs, MARKER_INIT};
use common::tools::{genkey, our_bin, require_tool, run_ok};

#[test]
fn the_upgrade_artifact_loads_with_docker_and_holds_the_esp_files() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let keys = w.join("keys");
    genkey("Acme Corp", &keys, &[]);
    let root = w.join("rootfs");
    busybox_rootfs(&root, MARKER_INIT);
    let tag = format!("sbkit-test-artifact:{}", std::process::id());
    run_ok(
        our_bin("build-uki")
            .arg(format!("dir:{}", root.display()))
            .args(["-t", "container", "--container-tag", &tag, "-d"])
            .arg(w.join("out"))
            .arg("-k")
            .arg(&keys)
            .arg("--stub")
            .arg(Assets::locate().stub(254))
            .args(["--single-efi-cmdline", "Debug: rd.debug"]),
    );
    let docker = require_tool("docker");
    let load = run_ok(
        Command::new(&docker)
            .arg("load")
            .arg("-i")
            .arg(w.join("out/norole.tar")),
    );
    assert!(
        String::from_utf8_lossy(&load.stdout).contains(&tag),
        "docker load names the tag"
    );
    let created = run_ok(Command::new(&docker).args(["create", &tag, "/none"]));
    let id = String::from_utf8_lossy(&created.stdout).trim().to_string();
    let export = w.join("export.tar");
    run_ok(
        Command::new(&docker)
            .args(["export", "-o"])
            .arg(&export)
            .arg(&id),
    );
    let _ = Command::new(&docker).args(["rm", &id]).output();
    let _ = Command::new(&docker).args(["rmi", &tag]).output();

    let extracted = w.join("extracted");
    fs::create_dir(&extracted).unwrap();
    run_ok(
        Command::new(require_tool("tar"))
            .arg("-xf")
            .arg(&export)
            .arg("-C")
            .arg(&extracted),
    );
    for f in [
        "EFI/kairos/norole.efi",
        "EFI/kairos/norole_debug.efi",
        "loader/entries/norole.conf",
        "loader/entries/norole_debug.conf",
    ] {
        assert!(extracted.join(f).is_file(), "{f} missing from the image");
    }
    run_ok(
        Command::new(require_tool("sbverify"))
            .arg("--cert")
            .arg(keys.join("db.pem"))
            .arg(extracted.join("EFI/kairos/norole.efi")),
    );
    let conf = fs::read_to_string(extracted.join("loader/entries/norole_debug.conf")).unwrap();
    assert!(conf.contains("efi /EFI/kairos/norole_debug.efi"), "{conf}");
}

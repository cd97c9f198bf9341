//! Hostile and broken images: each is refused by `build-uki` with its own
//! message naming the blob or path, and leaves nothing behind — no `.efi`,
//! no `.conf`, no temporary files — even when bytes were already streamed
//! into the initrd before the problem showed.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::images::{compress, layer_tar, OciLayout, L, Z};
use common::tools::{genkey, our_bin, run_fails};

struct Case {
    _work: tempfile::TempDir,
    keys: PathBuf,
}

impl Case {
    fn new() -> Case {
        let work = tempfile::tempdir().unwrap();
        let keys = work.path().join("keys");
        genkey("Hostile Test", &keys, &[]);
        Case { _work: work, keys }
    }

    /// Runs build-uki on `spec` (must fail); checks nothing was left; returns stderr.
    fn refused(&self, spec: &str, extra: &[&str]) -> String {
        let run = tempfile::tempdir().unwrap();
        let out = run.path().join("out");
        let tmp = run.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        let stderr = run_fails(
            our_bin("build-uki")
                .arg(spec)
                .args(["-t", "uki", "-d"])
                .arg(&out)
                .arg("-k")
                .arg(&self.keys)
                .args(extra)
                .env("TMPDIR", &tmp),
        );
        let left: Vec<_> = fs::read_dir(&out)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{spec}: output left behind: {left:?}");
        let tmp_left: Vec<_> = fs::read_dir(&tmp)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(
            tmp_left.is_empty(),
            "{spec}: temporary files left behind: {tmp_left:?}"
        );
        stderr
    }
}

/// An OCI layout of one image made of `layers`.
fn layout(dir: &Path, layers: &[Vec<u8>], z: Z) -> (OciLayout, common::images::Written) {
    let mut l = OciLayout::new(dir);
    let w = l.image(layers, z, "amd64");
    l.tag(&w, "v1");
    (l, w)
}

fn blob(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256").join(&digest[7..])
}

fn good_base() -> Vec<u8> {
    layer_tar(&[
        L::Dir("etc/", 0o755, 0, 0),
        L::File("etc/os-release", b"ID=x\n"),
        L::File("big", &[b'x'; 200_000]),
    ])
}

#[test]
fn unsafe_layer_paths_are_refused_with_their_own_message() {
    let case = Case::new();
    let work = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "dotdot",
            layer_tar(&[L::RawFile(b"../../escape", b"x")]),
            "`..` component escapes the root",
        ),
        (
            "absolute",
            layer_tar(&[L::RawFile(b"/etc/cron.d/evil", b"x")]),
            "absolute path",
        ),
        (
            "symlink-then-write",
            layer_tar(&[
                L::Sym("etc", "/host/etc"),
                L::File("etc/passwd", b"root::0:0::/:/bin/sh\n"),
            ]),
            "written through the symlink \"etc\"",
        ),
        (
            "link-escape",
            layer_tar(&[
                L::File("a", b"a"),
                L::RawLink(b"innocent", b"../../etc/shadow"),
            ]),
            "hard link target",
        ),
    ];
    for (name, evil, message) in cases {
        let dir = work.path().join(name);
        layout(&dir, &[good_base(), evil], Z::Gzip);
        let e = case.refused(&format!("oci:{}", dir.display()), &[]);
        assert!(e.contains(message), "{name}: {e}");
        assert!(e.contains("layer 2/2"), "{name}: the layer is named: {e}");
    }
}

#[test]
fn corrupt_truncated_missing_and_unknown_blobs_are_refused() {
    let case = Case::new();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();

    // A layer whose bytes do not match its digest, found only after its
    // entries were streamed (an uncompressed layer parses fine).
    let dir = w.join("mismatch");
    let (_, img) = layout(&dir, &[good_base()], Z::None);
    let path = blob(&dir, &img.layers[0]);
    let mut bytes = fs::read(&path).unwrap();
    let at = bytes.windows(4).position(|x| x == b"xxxx").unwrap();
    bytes[at] = b'y';
    fs::write(&path, bytes).unwrap();
    let e = case.refused(&format!("oci:{}", dir.display()), &[]);
    assert!(
        e.contains("does not match its digest") && e.contains(&img.layers[0]),
        "{e}"
    );

    // A truncated gzip layer, with a manifest that agrees with the cut blob:
    // the decompressor finds it.
    let dir = w.join("truncated");
    let tar = good_base();
    let (gz, mt) = compress(&tar, Z::Gzip);
    let cut = gz[..gz.len() / 2].to_vec();
    let mut l = OciLayout::new(&dir);
    let d = l.blob(&cut);
    let img = manual_image(&mut l, &[(d.clone(), cut.len(), mt.to_string(), &tar)]);
    l.tag(&img, "v1");
    let e = case.refused(&format!("oci:{}", dir.display()), &[]);
    assert!(
        e.contains("gzip stream is corrupt or truncated") && e.contains(&d),
        "{e}"
    );

    // A missing layer blob.
    let dir = w.join("missing");
    let (_, img) = layout(&dir, &[good_base()], Z::Zstd);
    fs::remove_file(blob(&dir, &img.layers[0])).unwrap();
    let e = case.refused(&format!("oci:{}", dir.display()), &[]);
    assert!(
        e.contains(&img.layers[0]) && e.contains("missing from"),
        "{e}"
    );

    // A manifest that does not parse (its descriptor matches the bytes).
    let dir = w.join("badmanifest");
    let mut l = OciLayout::new(&dir);
    let junk = b"{\"schemaVersion\": 2, \"layers\": 17}".to_vec();
    let d = l.blob(&junk);
    l.tag(
        &common::images::Written {
            digest: d.clone(),
            size: junk.len(),
            config: String::new(),
            layers: vec![],
        },
        "v1",
    );
    let e = case.refused(&format!("oci:{}", dir.display()), &[]);
    assert!(e.contains(&d) && e.contains("does not parse"), "{e}");

    // An unknown layer media type.
    let dir = w.join("mediatype");
    let mut l = OciLayout::new(&dir);
    let tar = good_base();
    let d = l.blob(&tar);
    let img = manual_image(
        &mut l,
        &[(d.clone(), tar.len(), "application/x-mystery".into(), &tar)],
    );
    l.tag(&img, "v1");
    let e = case.refused(&format!("oci:{}", dir.display()), &[]);
    assert!(
        e.contains("unknown layer media type") && e.contains("x-mystery"),
        "{e}"
    );

    // A docker-archive whose layer was altered after saving: its diff_id no longer matches.
    let file = w.join("altered.tar");
    let mut base = good_base();
    common::images::docker_archive(&[base.clone()], "x:1", &file);
    let original = fs::read(&file).unwrap();
    let at = original.windows(6).position(|x| x == b"xxxxxx").unwrap();
    let mut altered = original.clone();
    altered[at] = b'z';
    fs::write(&file, altered).unwrap();
    let e = case.refused(&format!("docker-archive:{}", file.display()), &[]);
    assert!(e.contains("does not match its digest"), "{e}");
    base.clear();
}

/// An image manifest over given (digest, size, media type, uncompressed tar) layers.
fn manual_image(
    l: &mut OciLayout,
    layers: &[(String, usize, String, &Vec<u8>)],
) -> common::images::Written {
    use sha2::Digest as _;
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|(_, _, _, t)| format!("sha256:{}", hex::encode(sha2::Sha256::digest(t))))
        .collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let cd = l.blob(&config);
    let descs: Vec<_> = layers
        .iter()
        .map(|(d, s, mt, _)| serde_json::json!({"mediaType": mt, "digest": d, "size": s}))
        .collect();
    let m = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    common::images::Written {
        digest: l.blob(&m),
        size: m.len(),
        config: cd,
        layers: layers.iter().map(|x| x.0.clone()).collect(),
    }
}

#[test]
fn archives_past_the_limits_are_refused() {
    let case = Case::new();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();

    // A zstd bomb: a few KiB that expand to 1 GiB of zeros after a tiny tar.
    let dir = w.join("bomb");
    let mut tar = layer_tar(&[L::File("small", b"s")]);
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 19).unwrap();
    {
        use std::io::Write;
        enc.write_all(&tar).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            enc.write_all(&zeros).unwrap();
        }
    }
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 1 << 20, "the bomb is small: {}", bomb.len());
    tar.clear();
    let mut l = OciLayout::new(&dir);
    let d = l.blob(&bomb);
    let fake_diff = layer_tar(&[L::File("small", b"s")]);
    let img = manual_image(
        &mut l,
        &[(
            d.clone(),
            bomb.len(),
            "application/vnd.oci.image.layer.v1.tar+zstd".into(),
            &fake_diff,
        )],
    );
    l.tag(&img, "v1");
    let started = std::time::Instant::now();
    let e = case.refused(
        &format!("oci:{}", dir.display()),
        &["--max-image-size", "64M"],
    );
    assert!(
        e.contains("decompresses past the limit") && e.contains(&d),
        "{e}"
    );
    assert!(
        started.elapsed().as_secs() < 60,
        "stopped at the limit, not at the end"
    );

    // A tar header declaring a huge file is refused before any data is read.
    let dir = w.join("declared");
    let mut h = tar::Header::new_gnu();
    h.set_path("huge").unwrap();
    h.set_size(100 << 30);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    let lie = h.as_bytes().to_vec();
    layout(&dir, &[lie], Z::Zstd);
    let e = case.refused(
        &format!("oci:{}", dir.display()),
        &["--max-image-size", "1G"],
    );
    assert!(
        e.contains("declared size of entry \"huge\"") && e.contains("--max-image-size"),
        "{e}"
    );

    // Entry count and path length.
    let dir = w.join("many");
    let names: Vec<String> = (0..50).map(|i| format!("f{i}")).collect();
    let entries: Vec<L> = names.iter().map(|n| L::File(n, b"")).collect();
    layout(&dir, &[layer_tar(&entries)], Z::Gzip);
    let e = case.refused(
        &format!("oci:{}", dir.display()),
        &["--max-image-entries", "20"],
    );
    assert!(
        e.contains("number of entries") && e.contains("--max-image-entries"),
        "{e}"
    );
    let e = case.refused(
        &format!("oci:{}", dir.display()),
        &["--max-path-length", "2"],
    );
    assert!(e.contains("--max-path-length"), "{e}");
}

/// Runs build-uki on `spec`, which must fail within `secs` seconds (a hang
/// is killed and reported); returns stderr.
fn refused_within(case: &Case, spec: &str, secs: u64) -> String {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let run = tempfile::tempdir().unwrap();
    let out = run.path().join("out");
    let mut child = our_bin("build-uki")
        .arg(spec)
        .args(["-t", "uki", "-d"])
        .arg(&out)
        .arg("-k")
        .arg(&case.keys)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{spec}: build-uki still running after {secs} s (it hangs)");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{spec}: succeeded");
    assert!(!out.exists() || fs::read_dir(&out).unwrap().next().is_none());
    stderr
}

#[test]
fn fifos_in_a_layout_are_refused_not_waited_on() {
    let case = Case::new();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();

    // index.json as a FIFO: nothing ever writes to it.
    let dir = w.join("fifo-index");
    layout(&dir, &[good_base()], Z::Gzip);
    fs::remove_file(dir.join("index.json")).unwrap();
    nix::unistd::mkfifo(&dir.join("index.json"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let e = refused_within(&case, &format!("oci:{}", dir.display()), 60);
    assert!(
        e.contains("index.json") && e.contains("is a FIFO") && e.contains("regular file"),
        "{e}"
    );

    // A layer blob as a FIFO.
    let dir = w.join("fifo-blob");
    let (_, img) = layout(&dir, &[good_base()], Z::Gzip);
    let path = blob(&dir, &img.layers[0]);
    fs::remove_file(&path).unwrap();
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let e = refused_within(&case, &format!("oci:{}", dir.display()), 60);
    assert!(
        e.contains(&img.layers[0][7..]) && e.contains("is a FIFO"),
        "{e}"
    );

    // An archive source that is a FIFO.
    let fifo = w.join("image.tar");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    for spec in [
        format!("oci-archive:{}", fifo.display()),
        format!("docker-archive:{}", fifo.display()),
        format!("tar:{}", fifo.display()),
    ] {
        let e = refused_within(&case, &spec, 60);
        assert!(e.contains("is not a regular file (a FIFO"), "{spec}: {e}");
    }
}

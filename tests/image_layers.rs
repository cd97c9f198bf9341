//! Layer semantics against the engine: the same image flattened by us (GNU
//! cpio unpacks our initrd) and by the Docker engine (`docker export` of a
//! created container) must give the same tree — file list, types, modes,
//! owners, link targets, device numbers, contents, hard-link sets — from
//! every transport that can hold the image.

mod common;

use std::fs;
use std::path::Path;

use sbkit::rootfs::ImageOptions;

use common::images::{
    assert_same, base_rootfs, build, docker, docker_archive, engine_export, engine_only,
    flatten_spec, import, layer_tar, our_tree, skopeo_copy, tar_dir, unique, unpack_initrd,
    EngineObjects, Snapshot, L,
};

/// RUN steps covering deletions, directory replacement, hard links across
/// layers (copy-up), symlinks, setuid/setgid/sticky, device nodes, FIFOs and
/// owners.
const STEPS: &str = r#"
RUN mkdir -p /opt/keep /opt/gone/sub /data && echo one > /opt/keep/a && echo lower > /opt/gone/sub/f && echo del > /opt/del && echo big > /data/big && chmod 0700 /opt/keep && chown 5:6 /opt/keep/a && echo x > /etc/motd && mkdir /opt/wasdir && echo in > /opt/wasdir/f && echo file > /opt/wasfile
RUN rm /opt/del && rm -r /opt/gone && mkdir /opt/gone && echo new > /opt/gone/fresh && ln /data/big /data/biglink && ln -s ../data/big /opt/sym && cp /bin/busybox /opt/suid && chmod 4755 /opt/suid && cp /bin/busybox /opt/sgid && chmod 2711 /opt/sgid && mknod /opt/null c 1 3 && mknod /opt/loop b 7 0 && mkfifo /opt/fifo && chown 1000:1000 /opt/gone && mkdir -m 1777 /opt/sticky && rm -r /opt/wasdir && echo now-a-file > /opt/wasdir && rm /opt/wasfile && mkdir -m 0751 /opt/wasfile
RUN echo modified >> /opt/keep/a && ln /opt/keep/a /opt/keep/a2 && chmod 2755 /opt/keep && rm /etc/motd && ln -s /data /opt/datalink && rm /bin/ls && chown 0:7 /data/big
"#;

#[test]
fn docker_built_image_flattens_like_the_engine_from_every_transport() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let mut objects = EngineObjects::default();
    let base = unique("sbkit-test-base");
    let root = w.join("base");
    base_rootfs(&root);
    import(&root, &format!("{base}:1"), &mut objects);
    let image = format!("{}:1", unique("sbkit-test-layers"));
    build(&format!("FROM {base}:1\n{STEPS}"), &image, &mut objects);

    let engine = Snapshot::of(
        &{
            let d = w.join("engine");
            engine_export(&image, &d, &mut objects);
            d
        },
        &engine_only,
    );
    assert!(
        engine.items.contains_key("opt/suid"),
        "the engine oracle saw the build"
    );

    // docker save (classic layout, as this engine writes it).
    let saved = w.join("saved.tar");
    docker(&["save", "-o", saved.to_str().unwrap(), &image]);
    let spec = format!("docker-archive:{}", saved.display());
    assert_same(&our_tree(&spec, &w.join("ours-save")), &engine, &spec);
    // Without the link window every hard link is repaired by a second read.
    let no_window = ImageOptions {
        link_window: 0,
        ..ImageOptions::default()
    };
    let prepared = flatten_spec(&spec, no_window.clone());
    assert!(!prepared.report.relinked_layers.is_empty());
    let dest = w.join("ours-save-nowindow");
    unpack_initrd(&prepared.initrd, &dest);
    assert_same(&Snapshot::of(&dest, &engine_only), &engine, "link window 0");
    // Picking the image by tag in the archive works too.
    let spec = format!("docker-archive:{}:{image}", saved.display());
    assert_same(&our_tree(&spec, &w.join("ours-save-tag")), &engine, &spec);

    // The engine itself.
    let spec = format!("docker-daemon:{image}");
    assert_same(&our_tree(&spec, &w.join("ours-daemon")), &engine, &spec);

    // OCI layout and OCI archive, written by skopeo from the engine.
    let oci = w.join("oci");
    skopeo_copy(
        &format!("docker-daemon:{image}"),
        &format!("oci:{}:v1", oci.display()),
        &[],
    );
    let spec = format!("oci:{}:v1", oci.display());
    assert_same(&our_tree(&spec, &w.join("ours-oci")), &engine, &spec);
    let archive = w.join("oci.tar");
    skopeo_copy(
        &format!("docker-daemon:{image}"),
        &format!("oci-archive:{}", archive.display()),
        &[],
    );
    let spec = format!("oci-archive:{}", archive.display());
    assert_same(&our_tree(&spec, &w.join("ours-ociarch")), &engine, &spec);

    // The newer `docker save` format: an OCI layout plus manifest.json.
    let newer = w.join("newer-save.tar");
    tar_dir(
        &oci,
        &newer,
        &[("manifest.json", save_manifest(&oci, &image))],
    );
    let spec = format!("docker-archive:{}", newer.display());
    assert_same(&our_tree(&spec, &w.join("ours-newsave")), &engine, &spec);

    // A flattened tarball: the engine's own export, read back.
    let spec = format!("tar:{}", w.join("engine.export.tar").display());
    assert_same(&our_tree(&spec, &w.join("ours-tar")), &engine, &spec);
}

/// The manifest.json a current engine writes next to its OCI layout.
fn save_manifest(oci: &Path, tag: &str) -> Vec<u8> {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(oci.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(oci.join("blobs/sha256").join(&m[7..])).unwrap()).unwrap();
    let path = |d: &serde_json::Value| format!("blobs/sha256/{}", &d.as_str().unwrap()[7..]);
    let layers: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| path(&l["digest"]))
        .collect();
    serde_json::to_vec(&serde_json::json!([{
        "Config": path(&manifest["config"]["digest"]),
        "RepoTags": [tag],
        "Layers": layers,
    }]))
    .unwrap()
}

/// Hand-made layers the engine applies with `docker load`: an opaque
/// directory, a link whose target an upper layer replaced, a directory
/// replacing a lower symlink, a whited-out directory, a file over a directory
/// and the reverse, and a file capability. (A hard link to a file of a lower
/// layer is covered by the unit tests: this engine refuses to load one.)
#[test]
fn hand_made_layers_flatten_like_the_engine() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let mut objects = EngineObjects::default();
    let base = layer_tar(&[
        L::Dir("etc/", 0o755, 0, 0),
        L::File("etc/os-release", b"ID=handmade\n"),
        L::Dir("opq/", 0o755, 0, 0),
        L::File("opq/old1", b"old1"),
        L::Dir("opq/oldsub/", 0o700, 3, 3),
        L::File("opq/oldsub/f", b"f"),
        L::Dir("usr/", 0o750, 7, 8),
        L::Dir("usr/lib/", 0o755, 0, 0),
        L::File("usr/lib/libx.so", b"libx"),
        L::Sym("lib", "usr/lib"),
        L::Dir("gone/", 0o755, 0, 0),
        L::File("gone/a", b"a"),
        L::Dir("was-dir/", 0o755, 0, 0),
        L::File("was-dir/x", b"x"),
        L::File("was-file", b"was a file"),
        L::Owned("shared", b"lower shared data", 0o640, 11, 12),
        L::File("replaced", b"lower version"),
        L::Dir("tmp/", 0o1777, 0, 0),
    ]);
    let middle = layer_tar(&[
        L::Dir("opq/", 0o711, 0, 0),
        L::File("opq/.wh..wh..opq", b""),
        L::File("opq/new", b"new"),
        // A link whose target the top layer replaces: it keeps this layer's data.
        L::Owned("target", b"middle target", 0o600, 9, 9),
        L::Link("keeps-middle", "target"),
        L::Dir("lib/", 0o755, 0, 0),
        L::File("lib/own.so", b"own"),
        L::File(".wh.gone", b""),
        L::File("was-dir", b"now a file"),
        L::Dir("was-file/", 0o700, 0, 0),
        L::Capable("ping", b"#!/bin/sh\n"),
    ]);
    let top = layer_tar(&[
        L::File("replaced", b"top version"),
        L::File("target", b"top target"),
        L::Dir("opq/", 0o705, 4, 4),
    ]);
    let layers = vec![base, middle, top];

    let archive = w.join("handmade.tar");
    let tag = format!("{}:1", unique("sbkit-test-handmade"));
    docker_archive(&layers, &tag, &archive);
    docker(&["load", "-q", "-i", archive.to_str().unwrap()]);
    objects.images.push(tag.clone());
    let engine = Snapshot::of(
        &{
            let d = w.join("engine");
            engine_export(&tag, &d, &mut objects);
            d
        },
        &engine_only,
    );
    assert_ne!(
        engine.items["keeps-middle"].what, engine.items["target"].what,
        "the engine keeps the middle layer's data under the link"
    );

    let spec = format!("docker-archive:{}", archive.display());
    let prepared = flatten_spec(&spec, Default::default());
    let ours_dir = w.join("ours");
    unpack_initrd(&prepared.initrd, &ours_dir);
    assert_same(&Snapshot::of(&ours_dir, &engine_only), &engine, &spec);
    let no_window = ImageOptions {
        link_window: 0,
        ..ImageOptions::default()
    };
    let dest = w.join("ours-nowindow");
    assert_same(
        &common::images::tree_with(&spec, no_window, &dest),
        &engine,
        "link window 0",
    );
    assert_eq!(prepared.report.capabilities_lost, ["ping"]);
    assert!(
        prepared
            .notes
            .iter()
            .any(|n| n.contains("security.capability") && n.contains("ping")),
        "the lost capability is reported: {:?}",
        prepared.notes
    );

    // The same layers as an OCI layout with zstd and gzip layers.
    for (z, name) in [
        (common::images::Z::Zstd, "zstd"),
        (common::images::Z::Gzip, "gzip"),
    ] {
        let dir = w.join(format!("oci-{name}"));
        let mut layout = common::images::OciLayout::new(&dir);
        let img = layout.image(&layers, z, "amd64");
        layout.tag(&img, "v1");
        let spec = format!("oci:{}", dir.display());
        assert_same(
            &our_tree(&spec, &w.join(format!("ours-{name}"))),
            &engine,
            &spec,
        );
    }
}

/// The initrd of an image is reproducible: same image, same bytes.
#[test]
fn flattening_is_deterministic() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let layers = vec![
        layer_tar(&[
            L::Dir("a/", 0o755, 0, 0),
            L::File("a/1", b"1"),
            L::File("b", b"b"),
        ]),
        layer_tar(&[
            L::File("a/2", b"2"),
            L::Link("c", "b"),
            L::File(".wh.b", b""),
        ]),
    ];
    let archive = w.join("img.tar");
    docker_archive(&layers, "x:1", &archive);
    let spec = format!("docker-archive:{}", archive.display());
    let one = fs::read(flatten_spec(&spec, Default::default()).initrd).unwrap();
    let two = fs::read(flatten_spec(&spec, Default::default()).initrd).unwrap();
    assert_eq!(one, two);
    let dest = w.join("x");
    unpack_initrd(&flatten_spec(&spec, Default::default()).initrd, &dest);
    assert_eq!(fs::read(dest.join("c")).unwrap(), b"b");
    assert!(!dest.join("b").exists());
}

//! Pulling from a real registry (Debian's docker-registry on 127.0.0.1,
//! images pushed with skopeo): by tag and by digest, the platform chosen from
//! a multi-arch index, plain HTTP only when allowed, and a private registry
//! with htpasswd basic auth and credentials from a Docker config.

mod common;

use std::fs;

use common::images::{layer_tar, tree_with, try_flatten_spec, OciLayout, L, Z};
use common::registry::LocalRegistry;
use sbkit::rootfs::{ImageOptions, Platform};

fn image_layers(arch: &str) -> Vec<Vec<u8>> {
    vec![
        layer_tar(&[
            L::Dir("etc/", 0o755, 0, 0),
            L::File("etc/os-release", b"ID=pulled\n"),
            L::Dir("opt/", 0o755, 0, 0),
            L::File("opt/gone", b"deleted above"),
            L::Owned("opt/tool", b"tool", 0o4755, 0, 0),
        ]),
        layer_tar(&[
            L::File("opt/.wh.gone", b""),
            L::Owned("arch", arch.as_bytes(), 0o644, 1, 2),
            L::Sym("opt/link", "tool"),
        ]),
    ]
}

fn insecure(host: &str) -> ImageOptions {
    ImageOptions {
        insecure_registries: vec![host.to_string()],
        ..ImageOptions::default()
    }
}

#[test]
fn pulls_by_tag_digest_and_platform_over_allowed_http() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let reg = LocalRegistry::start(None);
    let dir = w.join("layout");
    let mut layout = OciLayout::new(&dir);
    let amd = layout.image(&image_layers("amd64"), Z::Gzip, "amd64");
    let arm = layout.image(&image_layers("arm64"), Z::Zstd, "arm64");
    layout.tag(&amd, "single");
    layout.tag_index(&[("amd64", &amd), ("arm64", &arm)], "multi");
    reg.push(
        &format!("oci:{}:single", dir.display()),
        "acme/os:1.2",
        false,
    );
    reg.push(
        &format!("oci:{}:multi", dir.display()),
        "acme/os:multi",
        true,
    );

    let local = tree_with(
        &format!("oci:{}:single", dir.display()),
        ImageOptions::default(),
        &w.join("local"),
    );
    assert_eq!(local.items["arch"].uid, 1);

    // Plain HTTP is refused unless allowed, with the flag named.
    let by_tag = format!("{}/acme/os:1.2", reg.host);
    let e = try_flatten_spec(&by_tag, ImageOptions::default())
        .err()
        .expect("HTTP needs the flag");
    assert!(e.contains("--allow-insecure-registries"), "{e}");

    let pulled = tree_with(&by_tag, insecure(&reg.host), &w.join("tag"));
    assert_eq!(pulled, local, "by tag");
    let by_digest = format!("{}/acme/os@{}", reg.host, amd.digest);
    assert_eq!(
        tree_with(&by_digest, insecure(&reg.host), &w.join("digest")),
        local,
        "by digest"
    );
    let e = try_flatten_spec(
        &format!("{}/acme/os@sha256:{}", reg.host, "0".repeat(64)),
        insecure(&reg.host),
    )
    .err()
    .expect("an unknown digest fails");
    assert!(e.contains("404") || e.contains("MANIFEST_UNKNOWN"), "{e}");

    // Multi-arch: the host's platform by default, another on request.
    let multi = format!("{}/acme/os:multi", reg.host);
    let host = tree_with(&multi, insecure(&reg.host), &w.join("multi-host"));
    assert_eq!(
        host.items["arch"].what, local.items["arch"].what,
        "linux/amd64 by default"
    );
    let mut opts = insecure(&reg.host);
    opts.platform = Platform::parse("linux/arm64").unwrap();
    let arm_tree = tree_with(&multi, opts.clone(), &w.join("multi-arm"));
    let arm_file = w.join("multi-arm/arch");
    assert_eq!(fs::read(arm_file).unwrap(), b"arm64");
    assert_ne!(arm_tree, host);
    opts.platform = Platform::parse("riscv64").unwrap();
    let e = try_flatten_spec(&multi, opts)
        .err()
        .expect("no riscv64 image");
    assert!(
        e.contains("linux/riscv64") && e.contains("linux/arm64") && e.contains("--platform"),
        "{e}"
    );
}

#[test]
fn private_registry_with_basic_auth_uses_the_docker_config() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let reg = LocalRegistry::start(Some(("builder", "s3cret-pass")));
    let dir = w.join("layout");
    let mut layout = OciLayout::new(&dir);
    let img = layout.image(&image_layers("amd64"), Z::Gzip, "amd64");
    layout.tag(&img, "v1");
    reg.push(&format!("oci:{}:v1", dir.display()), "private/os:1", false);
    let spec = format!("{}/private/os:1", reg.host);

    // No credentials: refused, with what to do.
    let mut opts = insecure(&reg.host);
    let (_none, empty) = {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("config.json");
        fs::write(&f, b"{}").unwrap();
        (d, f)
    };
    opts.docker_config = Some(empty);
    let e = try_flatten_spec(&spec, opts.clone())
        .err()
        .expect("needs credentials");
    assert!(e.contains("docker login"), "{e}");

    // Wrong password: refused, naming the user.
    let (_bad_dir, bad) = reg.docker_config("builder", "wrong");
    opts.docker_config = Some(bad);
    let e = try_flatten_spec(&spec, opts.clone())
        .err()
        .expect("wrong password");
    assert!(e.contains("\"builder\"") && e.contains("refused"), "{e}");

    // The right credentials from the Docker config.
    let (_good_dir, good) = reg.docker_config("builder", "s3cret-pass");
    opts.docker_config = Some(good);
    let pulled = tree_with(&spec, opts, &w.join("pulled"));
    let local = tree_with(
        &format!("oci:{}:v1", dir.display()),
        ImageOptions::default(),
        &w.join("local"),
    );
    assert_eq!(pulled, local);
}

#[test]
fn https_registries_are_verified_unless_allowed_insecure() {
    use common::guest::Assets;
    use common::tools::{genkey, our_bin, run_fails, run_ok};
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let reg = LocalRegistry::start_tls();
    let dir = w.join("layout");
    let mut layout = OciLayout::new(&dir);
    let img = layout.image(&image_layers("amd64"), Z::Gzip, "amd64");
    layout.tag(&img, "v1");
    reg.push(&format!("oci:{}:v1", dir.display()), "tls/os:1", false);
    let spec = format!("{}/tls/os:1", reg.host);

    // A certificate nobody trusts: refused, with the way out named.
    let e = try_flatten_spec(&spec, ImageOptions::default())
        .err()
        .expect("an untrusted certificate is refused");
    assert!(e.contains("--allow-insecure-registries"), "{e}");
    // Allowed insecure: HTTPS without verification (not a fall back to HTTP).
    let local = tree_with(
        &format!("oci:{}:v1", dir.display()),
        ImageOptions::default(),
        &w.join("local"),
    );
    assert_eq!(
        tree_with(&spec, insecure(&reg.host), &w.join("insecure")),
        local
    );

    // Trusted through OpenSSL's SSL_CERT_FILE: verified HTTPS, no flag. The
    // image has no kernel, so the CLI gets one and a stub explicitly.
    let keys = w.join("keys");
    genkey("TLS Test", &keys, &[]);
    let assets = Assets::locate();
    let build = |extra_env: Option<&std::path::Path>| {
        let mut c = our_bin("build-uki");
        c.arg(&spec)
            .args(["-t", "uki", "-d"])
            .arg(w.join("out"))
            .arg("-k")
            .arg(&keys)
            .arg("--kernel")
            .arg(assets.kernel())
            .arg("--stub")
            .arg(assets.stub(254));
        if let Some(cert) = extra_env {
            c.env("SSL_CERT_FILE", cert);
        }
        c
    };
    run_ok(&mut build(Some(&reg.certificate())));
    assert!(w.join("out/norole.efi").is_file());
    fs::remove_dir_all(w.join("out")).unwrap();
    let e = run_fails(&mut build(None));
    assert!(e.contains("--allow-insecure-registries"), "{e}");
}

/// A loopback HTTP server standing in for a token service: records each
/// request's head and answers with a token.
struct Realm {
    host: String,
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Realm {
    fn start() -> Realm {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
                    match conn.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let body = br#"{"token":"not-a-valid-token"}"#;
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(body);
            }
        });
        Realm { host, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

#[test]
fn credentials_go_to_another_host_or_over_http_only_when_allowed_explicitly() {
    // A real registry whose Bearer challenge names a token service on
    // another host (here another port of loopback, plain HTTP).
    let realm = Realm::start();
    let realm_url = format!("http://{}/token", realm.host);
    let reg = LocalRegistry::start_token_auth(&realm_url);
    let spec = format!("{}/private/os:1", reg.host);
    let (_cfg_dir, cfg) = reg.docker_config("builder", "s3cret-pass");
    let mut opts = insecure(&reg.host);
    opts.docker_config = Some(cfg);

    let e = try_flatten_spec(&spec, opts.clone())
        .err()
        .expect("credentials must not go to the realm");
    assert!(
        e.contains("refusing to send the Docker credentials")
            && e.contains("another host")
            && e.contains(&format!("SBKIT_REGISTRY_AUTH_HOSTS={}", realm.host)),
        "{e}"
    );
    assert!(
        realm.requests().is_empty(),
        "the realm was contacted: {:?}",
        realm.requests()
    );

    // Without credentials the token service is asked anonymously (nothing
    // secret is sent); its token is then refused by the registry.
    let mut anonymous = insecure(&reg.host);
    let empty_dir = tempfile::tempdir().unwrap();
    let empty = empty_dir.path().join("config.json");
    fs::write(&empty, b"{}").unwrap();
    anonymous.docker_config = Some(empty);
    assert!(try_flatten_spec(&spec, anonymous).is_err());
    let asked = realm.requests();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(
        !asked[0].to_ascii_lowercase().contains("authorization:"),
        "{asked:?}"
    );

    // Allowed explicitly: then, and only then, the realm gets them.
    // (Only this test reads the variable for this port.)
    std::env::set_var("SBKIT_REGISTRY_AUTH_HOSTS", &realm.host);
    let r = try_flatten_spec(&spec, opts);
    std::env::remove_var("SBKIT_REGISTRY_AUTH_HOSTS");
    assert!(r.is_err(), "the stand-in token is not valid");
    let asked = realm.requests();
    assert_eq!(asked.len(), 2, "{asked:?}");
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode("builder:s3cret-pass");
    assert!(
        asked[1].to_ascii_lowercase().contains(&format!(
            "authorization: basic {}",
            basic.to_ascii_lowercase()
        )),
        "{asked:?}"
    );
}

#[test]
fn basic_credentials_over_plain_http_need_the_registry_named() {
    let reg = LocalRegistry::start(Some(("builder", "s3cret-pass")));
    let spec = format!("{}/private/os:1", reg.host);
    let (_cfg_dir, cfg) = reg.docker_config("builder", "s3cret-pass");
    // `*` lets any registry be reached over HTTP, but does not name this one:
    // its credentials stay home.
    let opts = ImageOptions {
        insecure_registries: vec!["*".into()],
        docker_config: Some(cfg),
        ..ImageOptions::default()
    };
    let e = try_flatten_spec(&spec, opts)
        .err()
        .expect("credentials must not go over plain HTTP");
    assert!(
        e.contains("over plain HTTP")
            && e.contains(&format!("--allow-insecure-registries {}", reg.host)),
        "{e}"
    );
}

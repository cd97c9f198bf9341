//! A real registry on loopback for pull tests: Debian's `docker-registry`
//! (distribution 2.8) serving plain HTTP on 127.0.0.1 with a temporary
//! config and storage, optionally behind htpasswd (bcrypt) basic auth;
//! images are pushed into it with skopeo.
#![allow(dead_code)]

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::tools::{require_tool, run_ok};

/// A running registry; stopped (and its storage removed) on drop.
pub struct LocalRegistry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub host: String,
    /// user and password when auth is on.
    pub creds: Option<(String, String)>,
    dir: tempfile::TempDir,
}

impl LocalRegistry {
    /// Starts a plain-HTTP registry; with `creds`, every request needs them.
    pub fn start(creds: Option<(&str, &str)>) -> LocalRegistry {
        Self::start_with(creds, false, None)
    }

    /// Starts a plain-HTTP registry that wants Bearer tokens from `realm`
    /// (its `WWW-Authenticate` challenge names that URL, whatever it is).
    pub fn start_token_auth(realm: &str) -> LocalRegistry {
        Self::start_with(None, false, Some(realm))
    }

    /// Starts a registry serving HTTPS with a self-signed certificate for
    /// 127.0.0.1 (see [`LocalRegistry::certificate`]).
    pub fn start_tls() -> LocalRegistry {
        Self::start_with(None, true, None)
    }

    /// The TLS certificate (PEM) of a registry started with [`LocalRegistry::start_tls`].
    pub fn certificate(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn start_with(creds: Option<(&str, &str)>, tls: bool, realm: Option<&str>) -> LocalRegistry {
        let registry = require_tool("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        // A free port: bind, read it, release (the registry binds it next).
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n  secret: sbkit-test-secret\n",
            dir.path().join("storage").display()
        );
        if let Some((user, pass)) = creds {
            let out = run_ok(Command::new(require_tool("htpasswd")).args(["-nbB", user, pass]));
            let file = dir.path().join("htpasswd");
            fs::write(&file, &out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: sbkit-test\n    path: {}\n",
                file.display()
            ));
        }
        if let Some(realm) = realm {
            // Token auth needs a certificate bundle to check tokens with; any
            // certificate does, no token here is ever valid.
            let (cert, key) = (
                dir.path().join("token.pem"),
                dir.path().join("token-key.pem"),
            );
            run_ok(
                Command::new(require_tool("openssl"))
                    .args([
                        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    ])
                    .args(["-subj", "/CN=sbkit-token"])
                    .arg("-keyout")
                    .arg(&key)
                    .arg("-out")
                    .arg(&cert),
            );
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {realm}\n    service: sbkit-test\n    issuer: sbkit-test\n    rootcertbundle: {}\n",
                cert.display()
            ));
        }
        if tls {
            let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            run_ok(
                Command::new(require_tool("openssl"))
                    .args([
                        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    ])
                    .args([
                        "-subj",
                        "/CN=127.0.0.1",
                        "-addext",
                        "subjectAltName=IP:127.0.0.1",
                    ])
                    .arg("-keyout")
                    .arg(&key)
                    .arg("-out")
                    .arg(&cert),
            );
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).unwrap();
        let log = fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(registry)
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut r = LocalRegistry {
            child,
            host,
            creds: creds.map(|(u, p)| (u.to_string(), p.to_string())),
            dir,
        };
        let start = Instant::now();
        while TcpStream::connect(&r.host).is_err() {
            if let Ok(Some(status)) = r.child.try_wait() {
                panic!(
                    "docker-registry exited ({status}): {}",
                    fs::read_to_string(r.dir.path().join("registry.log")).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "docker-registry did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    /// Pushes `src` (a skopeo source such as `oci:DIR:REF`) to `repo:tag`
    /// here; `all` copies every image of an index.
    pub fn push(&self, src: &str, repo_tag: &str, all: bool) {
        let mut cmd = Command::new(require_tool("skopeo"));
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if all {
            cmd.arg("--all");
        }
        if let Some((u, p)) = &self.creds {
            cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
        }
        cmd.arg(src)
            .arg(format!("docker://{}/{repo_tag}", self.host));
        run_ok(&mut cmd);
    }

    /// A Docker config directory whose config.json has `auths` for this
    /// registry with `user:pass`.
    pub fn docker_config(&self, user: &str, pass: &str) -> (tempfile::TempDir, PathBuf) {
        use base64::Engine as _;
        let dir = tempfile::tempdir().unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        let file = dir.path().join("config.json");
        fs::write(
            &file,
            serde_json::to_vec(&serde_json::json!({"auths": {&self.host: {"auth": auth}}}))
                .unwrap(),
        )
        .unwrap();
        (dir, file)
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

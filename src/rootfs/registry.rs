//! Pulling from an OCI / Docker registry (distribution API v2): references,
//! credentials from the Docker config, Basic and Bearer token auth, HTTPS
//! with an opt-in plain-HTTP fallback, and layer blobs as streams.
//!
//! A small blocking client (ureq) rather than an async one: the layer
//! pipeline is synchronous (tar → cpio → compressor), and a blob response is
//! simply a `Read` that the verified layer stream consumes once. Nothing is
//! written to disk; every manifest, config and layer is checked against its
//! digest (see `layer` and `resolve`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;

use super::digest::Digest;
use super::error::ImageError;
use super::layer::LayerRef;
use super::manifest::{descriptor_for, Descriptor, MANIFEST_ACCEPT};
use super::options::ImageOptions;
use super::resolve::{resolve_descriptor, BlobOpener, Resolved};
use super::store::MAX_DOCUMENT;
use crate::progress::{Progress, ReadProgress, Task, Unit};

/// Docker Hub's registry name in references and its API endpoint.
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// Docker Hub's key in `~/.docker/config.json`.
const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";
/// Docker Hub's token service, on a host of its own.
const DOCKER_HUB_REALM: &str = "auth.docker.io";

/// Hosts (host[:port], comma-separated) that may receive registry
/// credentials although the rule below refuses them: a token service on
/// another host, or plain HTTP.
pub const AUTH_HOSTS_ENV: &str = "SBKIT_REGISTRY_AUTH_HOSTS";

/// The scheme and the host[:port] of a URL, lower-cased, default ports
/// dropped (`https://Auth.Example:443/token` → `("https", "auth.example")`).
fn url_authority(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    // Userinfo (`user@host`) would let a realm look like another host.
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => "",
    };
    let host = authority
        .strip_suffix(default_port)
        .filter(|_| !default_port.is_empty())
        .unwrap_or(&authority)
        .to_string();
    Some((scheme, host))
}

/// An image reference: `[registry/]repository[:tag][@digest]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// host[:port]; `docker.io` when none is given.
    pub registry: String,
    /// `library/debian`, `acme/os`.
    pub repository: String,
    /// The tag (default `latest` when there is no digest).
    pub tag: Option<String>,
    /// A pinned manifest digest.
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses a reference the way the Docker CLI normalises it.
    pub fn parse(s: &str) -> Result<Reference, String> {
        let bad = |why: &str| format!("{s:?} is not an image reference: {why}");
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(Digest::parse(d).map_err(|e| bad(&e.to_string()))?)),
            None => (s, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, more))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), more.to_string())
            }
            _ => (DOCKER_HUB.to_string(), rest.to_string()),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r.to_string(), Some(t.to_string())),
            _ => (path, None),
        };
        if repository.is_empty()
            || !repository.split('/').all(|c| {
                !c.is_empty()
                    && c.bytes()
                        .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
            })
        {
            return Err(bad(
                "the repository must be lowercase letters, digits, . _ - and /",
            ));
        }
        if let Some(t) = &tag {
            if t.is_empty()
                || t.len() > 128
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            {
                return Err(bad("bad tag"));
            }
        }
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".into())
        } else {
            tag
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What a manifest request asks for: the digest when pinned, else the tag.
    fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Credentials for one registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

#[derive(Deserialize, Default)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(rename = "credHelpers", default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(rename = "credsStore", default)]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(rename = "identitytoken", default)]
    identity_token: Option<String>,
}

/// The Docker config file in use: `--docker-config`, `$DOCKER_CONFIG/config.json`,
/// else `~/.docker/config.json`.
pub fn docker_config_path(opts: &ImageOptions) -> Option<PathBuf> {
    if let Some(p) = &opts.docker_config {
        return Some(p.clone());
    }
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// Credentials for `registry` from the Docker config (`auths`, or a
/// `credHelpers`/`credsStore` helper program).
pub fn credentials(opts: &ImageOptions, registry: &str) -> Result<Option<Credentials>, ImageError> {
    let Some(path) = docker_config_path(opts) else {
        return Ok(None);
    };
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && opts.docker_config.is_none() => {
            return Ok(None)
        }
        Err(e) => return Err(ImageError::io(&path)(e)),
    };
    let config: DockerConfig = serde_json::from_slice(&text).map_err(|e| {
        ImageError::source(
            &path.display().to_string(),
            format!("not a Docker config: {e}"),
        )
    })?;
    let keys: Vec<String> = if registry == DOCKER_HUB {
        vec![
            DOCKER_HUB_AUTH_KEY.into(),
            DOCKER_HUB.into(),
            "index.docker.io".into(),
        ]
    } else {
        vec![
            registry.to_string(),
            format!("https://{registry}"),
            format!("http://{registry}"),
            format!("https://{registry}/v1/"),
            format!("https://{registry}/v2/"),
        ]
    };
    let helper = keys
        .iter()
        .find_map(|k| config.cred_helpers.get(k).cloned())
        .or_else(|| config.creds_store.clone());
    if let Some(entry) = keys.iter().find_map(|k| config.auths.get(k)) {
        if let Some(c) = decode_auth(entry) {
            return Ok(Some(c));
        }
    }
    match helper {
        Some(h) => credential_helper(&h, keys.first().map_or(registry, |k| k.as_str())),
        None => Ok(None),
    }
}

fn decode_auth(e: &AuthEntry) -> Option<Credentials> {
    if let (Some(u), Some(p)) = (&e.username, &e.password) {
        return Some(Credentials {
            username: u.clone(),
            password: p.clone(),
        });
    }
    if let Some(t) = &e.identity_token {
        return Some(Credentials {
            username: "<token>".into(),
            password: t.clone(),
        });
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(e.auth.as_deref()?.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some(Credentials {
        username: u.to_string(),
        password: p.to_string(),
    })
}

/// Runs `docker-credential-<helper> get` for `server`.
fn credential_helper(helper: &str, server: &str) -> Result<Option<Credentials>, ImageError> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let program = format!("docker-credential-{helper}");
    let child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            return Err(ImageError::source(
                server,
                format!(
                    "the Docker config names credential helper {program}, which cannot run: {e}"
                ),
            ))
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| ImageError::source(server, format!("{program}: {e}")))?;
    if !out.status.success() {
        // "credentials not found" is not an error: pull anonymously.
        return Ok(None);
    }
    #[derive(Deserialize)]
    struct HelperOut {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let h: HelperOut = serde_json::from_slice(&out.stdout)
        .map_err(|e| ImageError::source(server, format!("{program} answered: {e}")))?;
    Ok(Some(Credentials {
        username: h.username,
        password: h.secret,
    }))
}

/// A connection to one repository of one registry.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    reference: Reference,
    creds: Option<Credentials>,
    auth: Mutex<Option<String>>,
    /// The registry was named in `--allow-insecure-registries` (not only `*`).
    named_insecure: bool,
    /// Hosts the user allowed to receive credentials ([`AUTH_HOSTS_ENV`]).
    auth_hosts: Vec<String>,
}

impl Client {
    /// Connects to the registry of `reference`: HTTPS; for a registry allowed
    /// by `--allow-insecure-registries`, HTTPS with any certificate, else
    /// plain HTTP.
    pub fn connect(reference: &Reference, opts: &ImageOptions) -> Result<Client, ImageError> {
        // An insecure registry is tried over HTTPS without verification
        // first, then over plain HTTP, as the Docker engine does.
        let insecure = opts.insecure(&reference.registry);
        let tls = native_tls::TlsConnector::builder()
            .danger_accept_invalid_certs(insecure)
            .danger_accept_invalid_hostnames(insecure)
            .build()
            .map_err(|e| ImageError::Registry {
                registry: reference.registry.clone(),
                problem: format!("TLS setup failed: {e}"),
            })?;
        let agent = ureq::AgentBuilder::new()
            .tls_connector(Arc::new(tls))
            .timeout_connect(Duration::from_secs(30))
            .timeout_read(Duration::from_secs(300))
            .build();
        let host = if reference.registry == DOCKER_HUB {
            DOCKER_HUB_API.to_string()
        } else {
            reference.registry.clone()
        };
        let creds = credentials(opts, &reference.registry)?;
        let mut client = Client {
            agent,
            base: format!("https://{host}"),
            reference: reference.clone(),
            creds,
            auth: Mutex::new(None),
            named_insecure: opts
                .insecure_registries
                .iter()
                .any(|r| r == &reference.registry),
            auth_hosts: std::env::var(AUTH_HOSTS_ENV)
                .unwrap_or_default()
                .split(',')
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
        };
        match client.ping() {
            Ok(()) => Ok(client),
            Err(https_err) => {
                if !insecure {
                    return Err(ImageError::Registry {
                        registry: reference.registry.clone(),
                        problem: format!(
                            "{https_err}; if it serves plain HTTP, allow it with --allow-insecure-registries {}",
                            reference.registry
                        ),
                    });
                }
                client.base = format!("http://{host}");
                client.ping().map_err(|e| ImageError::Registry {
                    registry: reference.registry.clone(),
                    problem: format!("not reachable over HTTPS ({https_err}) nor HTTP ({e})"),
                })?;
                Ok(client)
            }
        }
    }

    /// `GET /v2/`: reachability (401 is fine: auth comes per request).
    fn ping(&self) -> Result<(), String> {
        match self.agent.get(&format!("{}/v2/", self.base)).call() {
            Ok(_) | Err(ureq::Error::Status(401, _)) => Ok(()),
            Err(ureq::Error::Status(code, _)) => Err(format!("GET /v2/ answered {code}")),
            Err(ureq::Error::Transport(t)) => Err(t.to_string()),
        }
    }

    fn err(&self, problem: impl Into<String>) -> ImageError {
        ImageError::Registry {
            registry: self.reference.registry.clone(),
            problem: problem.into(),
        }
    }

    /// GET with auth: on 401, answer the challenge (Basic or Bearer) once.
    fn get(&self, path: &str, accept: Option<&str>) -> Result<ureq::Response, ImageError> {
        let url = format!("{}{path}", self.base);
        for attempt in 0..2 {
            let mut req = self.agent.get(&url);
            if let Some(a) = accept {
                req = req.set("Accept", a);
            }
            if let Some(h) = self.auth.lock().ok().and_then(|a| a.clone()) {
                req = req.set("Authorization", &h);
            }
            match req.call() {
                Ok(r) => return Ok(r),
                Err(ureq::Error::Status(401, resp)) if attempt == 0 => {
                    let challenge = resp.header("www-authenticate").unwrap_or("").to_string();
                    let header = self.answer(&challenge)?;
                    if let Ok(mut a) = self.auth.lock() {
                        *a = Some(header);
                    }
                }
                Err(ureq::Error::Status(401, _)) => {
                    return Err(self.err(match &self.creds {
                        Some(c) => format!(
                            "the credentials of user {:?} from the Docker config were refused for {}; `docker login {}` again",
                            c.username, self.reference.repository, self.reference.registry
                        ),
                        None => format!(
                            "authentication required for {} and the Docker config ({}) has none; run `docker login {}` (or give --docker-config)",
                            self.reference.repository,
                            docker_config_path(&ImageOptions::default())
                                .map(|p| p.display().to_string())
                                .unwrap_or_else(|| "~/.docker/config.json".into()),
                            self.reference.registry
                        ),
                    }))
                }
                Err(ureq::Error::Status(code, resp)) => {
                    let mut body = String::new();
                    let _ = resp.into_reader().take(512).read_to_string(&mut body);
                    return Err(self.err(format!("GET {path} answered {code}: {}", body.trim())));
                }
                Err(ureq::Error::Transport(t)) => {
                    return Err(self.err(format!("GET {path}: {t}")))
                }
            }
        }
        Err(self.err(format!("GET {path}: authentication failed")))
    }

    /// Whether the Docker credentials may go to `url`: only to the registry's
    /// own host (or Docker Hub's token service for Docker Hub), over HTTPS —
    /// or over plain HTTP to a registry named in `--allow-insecure-registries`
    /// (not just `*`) — unless the user listed the host in [`AUTH_HOSTS_ENV`].
    /// A registry chooses its realm, so without this rule any registry (or
    /// anyone answering for it) could collect the credentials.
    fn may_send_credentials(&self, url: &str) -> Result<(), ImageError> {
        let own = url_authority(&self.base)
            .map(|(_, h)| h)
            .unwrap_or_default();
        let Some((scheme, host)) = url_authority(url) else {
            return Err(self.err(format!(
                "refusing to send the Docker credentials to {url:?}: not a plain http(s)://host URL"
            )));
        };
        if self.auth_hosts.contains(&host) {
            return Ok(());
        }
        let same_host = host == own || (own == DOCKER_HUB_API && host == DOCKER_HUB_REALM);
        if !same_host {
            return Err(self.err(format!(
                "refusing to send the Docker credentials for {} to {url}, which is on another host ({host}); a registry chooses where it sends clients to log in. If {host} is really this registry's token service, allow it explicitly with {AUTH_HOSTS_ENV}={host}",
                self.reference.registry
            )));
        }
        if scheme != "https" && !self.named_insecure {
            return Err(self.err(format!(
                "refusing to send the Docker credentials for {} over plain HTTP ({url}); name the registry explicitly with --allow-insecure-registries {} (not just `*`), or allow the host with {AUTH_HOSTS_ENV}={host}",
                self.reference.registry, self.reference.registry
            )));
        }
        Ok(())
    }

    /// The Authorization header answering a `WWW-Authenticate` challenge.
    fn answer(&self, challenge: &str) -> Result<String, ImageError> {
        let basic = self.creds.as_ref().map(|c| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", c.username, c.password))
            )
        });
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            if basic.is_some() {
                self.may_send_credentials(&self.base)?;
            }
            return basic.ok_or_else(|| {
                self.err(format!(
                    "authentication required for {}; run `docker login {}` (credentials are read from the Docker config)",
                    self.reference.repository, self.reference.registry
                ))
            });
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(self.err(format!(
                "unsupported authentication challenge {challenge:?}"
            )));
        }
        let p = parse_challenge(params);
        let realm = p
            .get("realm")
            .ok_or_else(|| self.err("Bearer challenge without a realm"))?;
        let mut url = realm.clone();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        if let Some(s) = p.get("service") {
            url.push_str(&format!("{sep}service={}", urlencode(s)));
            sep = '&';
        }
        let scope = p
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{}:pull", self.reference.repository));
        url.push_str(&format!("{sep}scope={}", urlencode(&scope)));
        let mut req = self.agent.get(&url);
        if let Some(b) = &basic {
            // Checked on the realm as given: the query added above cannot
            // change its host.
            self.may_send_credentials(realm)?;
            req = req.set("Authorization", b);
        }
        let resp = req
            .call()
            .map_err(|e| self.err(format!("token request to {realm}: {e}")))?;
        #[derive(Deserialize)]
        struct Token {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let t: Token = serde_json::from_reader(resp.into_reader().take(MAX_DOCUMENT))
            .map_err(|e| self.err(format!("token answer from {realm}: {e}")))?;
        let token = t
            .token
            .or(t.access_token)
            .ok_or_else(|| self.err(format!("token answer from {realm} has no token")))?;
        Ok(format!("Bearer {token}"))
    }

    /// Fetches a manifest or index by tag or digest; returns bytes and content type.
    fn manifest(&self, reference: &str) -> Result<(Vec<u8>, String, Option<String>), ImageError> {
        let resp = self.get(
            &format!("/v2/{}/manifests/{reference}", self.reference.repository),
            Some(MANIFEST_ACCEPT),
        )?;
        let ctype = resp
            .header("content-type")
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let header_digest = resp.header("docker-content-digest").map(str::to_string);
        let mut bytes = Vec::new();
        resp.into_reader()
            .take(MAX_DOCUMENT + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.err(format!("reading manifest {reference}: {e}")))?;
        if bytes.len() as u64 > MAX_DOCUMENT {
            return Err(self.err(format!(
                "manifest {reference} is larger than {MAX_DOCUMENT} bytes"
            )));
        }
        Ok((bytes, ctype, header_digest))
    }

    /// Fetches a small blob (the config) whole.
    fn small_blob(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let resp = self.get(
            &format!("/v2/{}/blobs/{digest}", self.reference.repository),
            None,
        )?;
        let mut bytes = Vec::new();
        resp.into_reader()
            .take(MAX_DOCUMENT + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.err(format!("reading blob {digest}: {e}")))?;
        Ok(bytes)
    }

    /// Opens a layer blob as a stream.
    pub fn blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, ImageError> {
        let resp = self
            .get(
                &format!("/v2/{}/blobs/{digest}", self.reference.repository),
                None,
            )
            .map_err(|e| match e {
                ImageError::Registry { problem, .. } => ImageError::Blob {
                    digest: digest.to_string(),
                    what: "layer".into(),
                    problem: format!("{}: {problem}", self.reference.registry),
                },
                other => other,
            })?;
        Ok(resp.into_reader())
    }
}

fn parse_challenge(params: &str) -> BTreeMap<String, String> {
    // key="value",key="value" — values may hold commas inside quotes.
    let mut out = BTreeMap::new();
    let mut rest = params.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (q[..end].to_string(), &q[end + 1..]),
                None => (q.to_string(), ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (after[..end].to_string(), &after[end..]),
                None => (after.to_string(), ""),
            }
        };
        out.insert(key, value);
        rest = next.trim_start_matches(',').trim();
    }
    out
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct RegistryOpener {
    client: Client,
    bar: Arc<dyn Task>,
}

impl BlobOpener for RegistryOpener {
    fn open(&self, _index: usize, layer: &LayerRef) -> Result<Box<dyn Read + Send>, ImageError> {
        let r = self.client.blob(&layer.digest)?;
        Ok(Box::new(ReadProgress::new(r, self.bar.clone())))
    }
}

/// Resolves `reference` on its registry: the manifest (by tag or digest,
/// checked against the digest), the platform's manifest from an index, the
/// config; layers are opened later as streams, with a pull progress bar.
pub fn resolve_registry(
    reference: &Reference,
    opts: &ImageOptions,
    progress: &dyn Progress,
) -> Result<Resolved, ImageError> {
    let client = Client::connect(reference, opts)?;
    let (bytes, ctype, header_digest) = client.manifest(&reference.manifest_ref())?;
    let top = Digest::sha256_of(&bytes);
    if let Some(pinned) = &reference.digest {
        if !pinned.matches(&bytes) {
            return Err(ImageError::DigestMismatch {
                digest: pinned.to_string(),
                what: format!("manifest of {reference}"),
                actual: top.to_string(),
                len: bytes.len() as u64,
            });
        }
    } else if let Some(h) = header_digest {
        // A tag is not content-addressed; the registry's own digest header
        // still catches corruption on the way.
        if let Ok(d) = Digest::parse(&h) {
            if !d.matches(&bytes) {
                return Err(ImageError::DigestMismatch {
                    digest: d.to_string(),
                    what: format!("manifest of {reference} (Docker-Content-Digest)"),
                    actual: top.to_string(),
                    len: bytes.len() as u64,
                });
            }
        }
    }
    let top_digest = reference.digest.clone().unwrap_or(top);
    let desc = descriptor_for(&ctype, &top_digest, bytes.len() as u64).map_err(|problem| {
        ImageError::Registry {
            registry: reference.registry.clone(),
            problem: format!("manifest digest {top_digest}: {problem}"),
        }
    })?;
    let first = Mutex::new(Some(bytes));
    let mut fetch = |d: &Descriptor, what: &str| -> Result<Vec<u8>, ImageError> {
        if d.digest() == desc.digest() {
            if let Some(b) = first.lock().ok().and_then(|mut f| f.take()) {
                return Ok(b);
            }
        }
        let digest = d.digest().to_string();
        if what == "config" {
            client.small_blob(&digest)
        } else {
            client.manifest(&digest).map(|(b, _, _)| b)
        }
    };
    let m = resolve_descriptor(&desc, &opts.platform, &mut fetch)?;
    let total: u64 = m.layers.iter().filter_map(|l| l.size).sum();
    let bar: Arc<dyn Task> = Arc::from(progress.start("pulling", Unit::Bytes, Some(total)));
    bar.set_message(&reference.to_string());
    Ok(Resolved {
        description: format!(
            "{reference} (manifest {}, config {}, {}, {} layers)",
            m.digest,
            m.config,
            m.platform,
            m.layers.len()
        ),
        layers: m.layers,
        opener: Arc::new(RegistryOpener { client, bar }),
        notes: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalise_like_docker() {
        let r = Reference::parse("debian").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/debian:latest");
        let r = Reference::parse("registry.example:5000/acme/os:1.2").unwrap();
        assert_eq!(r.registry, "registry.example:5000");
        assert_eq!(r.repository, "acme/os");
        assert_eq!(r.tag.as_deref(), Some("1.2"));
        let d = format!("sha256:{}", "b".repeat(64));
        let r = Reference::parse(&format!("127.0.0.1:5000/x@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_ref(), d);
        assert!(Reference::parse("Upper/case").is_err());
    }

    #[test]
    fn url_authorities_compare_hosts() {
        assert_eq!(
            url_authority("https://Auth.Example:443/token?x=1"),
            Some(("https".into(), "auth.example".into()))
        );
        assert_eq!(
            url_authority("http://127.0.0.1:5000/v2/"),
            Some(("http".into(), "127.0.0.1:5000".into()))
        );
        assert_eq!(
            url_authority("https://registry.example@evil.example/t"),
            None
        );
        assert_eq!(url_authority("/relative"), None);
    }

    #[test]
    fn challenges_and_auth_entries_parse() {
        let p = parse_challenge(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        let e = AuthEntry {
            auth: Some(base64::engine::general_purpose::STANDARD.encode("u:p:w")),
            ..AuthEntry::default()
        };
        assert_eq!(
            decode_auth(&e),
            Some(Credentials {
                username: "u".into(),
                password: "p:w".into()
            })
        );
    }
}

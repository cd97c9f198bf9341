//! `sbkit images build`: the images described by `docker-bake.hcl` (the one
//! source of truth that `docker buildx bake` also reads, here read with the
//! `hcl` crate: variables, groups, targets, `${VAR}` templates), built through
//! `docker buildx bake` when buildx is present, else through the engine's
//! build API with a context holding only the dockerfile and what its
//! COPY/ADD lines name.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use bollard::query_parameters::{BuildImageOptions, TagImageOptions};
use bollard::Docker;
use futures_util::StreamExt;
use serde::Deserialize;

use crate::engine::EngineError;

/// The offline base `scripts/base-image.sh` makes; used for `BASE` when present.
pub const OFFLINE_BASE: &str = "sbkit-base:bookworm";

/// Building images failed.
#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    /// The bake file.
    #[error("{path}: {message}")]
    Bake {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A file the dockerfile copies is missing.
    #[error("{target}: {path} (COPY in {dockerfile}) is missing{hint}")]
    MissingContext {
        /// Target.
        target: String,
        /// The file.
        path: String,
        /// The dockerfile.
        dockerfile: String,
        /// Advice.
        hint: &'static str,
    },
    /// The engine refused or the build failed.
    #[error("{target}: build failed: {message}")]
    Build {
        /// Target.
        target: String,
        /// The builder's message.
        message: String,
    },
    /// The engine.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Deserialize)]
struct BakeFile {
    #[serde(default)]
    group: BTreeMap<String, BakeGroup>,
    #[serde(default)]
    target: BTreeMap<String, BakeTarget>,
}

#[derive(Debug, Deserialize)]
struct BakeGroup {
    targets: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct BakeTarget {
    context: Option<String>,
    dockerfile: Option<String>,
    #[serde(default)]
    args: BTreeMap<String, String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// A target with its variables substituted.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Target {
    /// Target name.
    pub name: String,
    /// Context directory.
    pub context: PathBuf,
    /// Dockerfile, relative to the context.
    pub dockerfile: String,
    /// Build arguments.
    pub args: BTreeMap<String, String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// The variables of a bake file: each `variable` block's default, replaced
/// by the environment variable of the same name (as bake does), then by `overrides`.
fn variables(
    body: &hcl::Body,
    overrides: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    use hcl::eval::Evaluate;
    let mut vars = BTreeMap::new();
    for block in body.blocks().filter(|b| b.identifier() == "variable") {
        let name = block
            .labels()
            .first()
            .map(|l| l.as_str().to_string())
            .ok_or("a variable block without a name")?;
        let default = match block.body().attributes().find(|a| a.key() == "default") {
            Some(attr) => match attr
                .expr()
                .evaluate(&hcl::eval::Context::new())
                .map_err(|e| format!("variable {name}: {e}"))?
            {
                hcl::Value::String(s) => s,
                hcl::Value::Null => String::new(),
                other => other.to_string(),
            },
            None => String::new(),
        };
        let value = std::env::var(&name).unwrap_or(default);
        vars.insert(name, value);
    }
    vars.extend(overrides.clone());
    Ok(vars)
}

/// Reads the bake file and resolves `names` (targets or groups; empty: `default`).
/// Variables come from the environment, else the file's defaults; `overrides` wins.
pub fn resolve(
    bake: &Path,
    names: &[String],
    overrides: &BTreeMap<String, String>,
) -> Result<Vec<Target>, ImagesError> {
    let err = |message: String| ImagesError::Bake {
        path: bake.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(bake).map_err(|e| err(e.to_string()))?;
    let body: hcl::Body =
        hcl::parse(&text).map_err(|e| err(format!("not a bake HCL file: {e}")))?;
    let vars = variables(&body, overrides).map_err(err)?;
    let mut ctx = hcl::eval::Context::new();
    for (k, v) in &vars {
        ctx.declare_var(k.as_str(), v.as_str());
    }
    let file: BakeFile = hcl::eval::from_str(&text, &ctx).map_err(|e| err(e.to_string()))?;
    let mut wanted = if names.is_empty() {
        vec!["default".to_string()]
    } else {
        names.to_vec()
    };
    let mut out: Vec<Target> = Vec::new();
    while let Some(n) = wanted.first().cloned() {
        wanted.remove(0);
        if let Some(g) = file.group.get(&n) {
            wanted.splice(0..0, g.targets.iter().cloned());
            continue;
        }
        let t = file
            .target
            .get(&n)
            .ok_or_else(|| err(format!("no target or group {n:?}")))?;
        if out.iter().any(|o| o.name == n) {
            continue;
        }
        let base = bake.parent().unwrap_or(Path::new("."));
        out.push(Target {
            name: n.clone(),
            context: base.join(t.context.as_deref().unwrap_or(".")),
            dockerfile: t.dockerfile.clone().unwrap_or_else(|| "Dockerfile".into()),
            args: t.args.clone(),
            tags: t.tags.clone(),
            labels: t.labels.clone(),
        });
    }
    Ok(out)
}

/// Resolved targets in the form `docker buildx bake --print` shows them:
/// `{"target": {NAME: {context, dockerfile, args, tags, labels}}}`.
pub fn print_form(targets: &[Target]) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = targets
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                serde_json::json!({
                    "context": t.context,
                    "dockerfile": t.dockerfile,
                    "args": t.args,
                    "tags": t.tags,
                    "labels": t.labels,
                }),
            )
        })
        .collect();
    serde_json::json!({ "target": map })
}

/// The context paths a dockerfile's COPY/ADD lines read (not `--from=` stages).
pub fn copy_sources(dockerfile: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in dockerfile.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(first) = words.first() else { continue };
        if !(first.eq_ignore_ascii_case("COPY") || first.eq_ignore_ascii_case("ADD")) {
            continue;
        }
        let args: Vec<&str> = words[1..]
            .iter()
            .copied()
            .filter(|w| !w.starts_with("--"))
            .collect();
        if words.iter().any(|w| w.starts_with("--from")) || args.len() < 2 {
            continue;
        }
        out.extend(args[..args.len() - 1].iter().map(|s| s.to_string()));
    }
    out
}

/// Appends a regular file or a directory tree as plain entries: the tar
/// crate would write a large sparse binary as a GNU sparse entry, which the
/// engine's context reader refuses.
fn append_plain(b: &mut tar::Builder<Vec<u8>>, path: &Path, name: &str) -> Result<(), ImagesError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(path)?;
    let mut h = tar::Header::new_gnu();
    h.set_mode(meta.permissions().mode() & 0o7777);
    h.set_mtime(0);
    if meta.is_dir() {
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        b.append_data(&mut h, name, std::io::empty())?;
        let mut children: Vec<_> = std::fs::read_dir(path)?.collect::<Result<_, _>>()?;
        children.sort_by_key(|e| e.file_name());
        for c in children {
            let child = format!("{name}/{}", c.file_name().to_string_lossy());
            append_plain(b, &c.path(), &child)?;
        }
    } else if meta.file_type().is_symlink() {
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, name, std::fs::read_link(path)?)?;
    } else {
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(meta.len());
        b.append_data(&mut h, name, std::fs::File::open(path)?)?;
    }
    Ok(())
}

/// The build context: the dockerfile and the files its COPY/ADD lines name.
pub fn context_tar(t: &Target) -> Result<Vec<u8>, ImagesError> {
    let dockerfile_path = t.context.join(&t.dockerfile);
    let text = std::fs::read_to_string(&dockerfile_path)?;
    let mut b = tar::Builder::new(Vec::new());
    append_plain(&mut b, &dockerfile_path, &t.dockerfile)?;
    for src in copy_sources(&text) {
        let p = t.context.join(&src);
        if !p.exists() {
            return Err(ImagesError::MissingContext {
                target: t.name.clone(),
                path: p.display().to_string(),
                dockerfile: t.dockerfile.clone(),
                hint: if src.starts_with("target/release") {
                    ": run cargo build --release --locked first"
                } else {
                    ""
                },
            });
        }
        append_plain(&mut b, &p, src.trim_end_matches('/'))?;
    }
    Ok(b.into_inner()?)
}

/// Builds one target through the engine; `on_line` sees the builder's output.
pub async fn build_with_engine(
    docker: &Docker,
    t: &Target,
    on_line: &mut (dyn FnMut(&str) + Send),
) -> Result<(), ImagesError> {
    let tar = context_tar(t)?;
    let first = t
        .tags
        .first()
        .cloned()
        .unwrap_or_else(|| format!("{}:latest", t.name));
    let options = BuildImageOptions {
        dockerfile: t.dockerfile.clone(),
        t: Some(first.clone()),
        rm: true,
        forcerm: true,
        buildargs: Some(
            t.args
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        ),
        labels: Some(
            t.labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        ),
        // Everything comes from the base image: builds never need the network.
        networkmode: Some("none".into()),
        ..Default::default()
    };
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(tar.into())));
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| ImagesError::Build {
            target: t.name.clone(),
            message: e.to_string(),
        })?;
        if let Some(detail) = info.error_detail.and_then(|d| d.message) {
            return Err(ImagesError::Build {
                target: t.name.clone(),
                message: detail,
            });
        }
        if let Some(s) = info.stream {
            for l in s.lines().filter(|l| !l.trim().is_empty()) {
                on_line(l);
            }
        }
    }
    for extra in t.tags.iter().skip(1) {
        let (repo, tag) = extra.rsplit_once(':').unwrap_or((extra.as_str(), "latest"));
        docker
            .tag_image(
                &first,
                Some(TagImageOptions {
                    repo: Some(repo.to_string()),
                    tag: Some(tag.to_string()),
                }),
            )
            .await
            .map_err(EngineError::from)?;
    }
    Ok(())
}

/// Whether `docker buildx` is available.
pub fn have_buildx() -> bool {
    std::process::Command::new("docker")
        .args(["buildx", "version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_sources_skip_stages_and_flags() {
        let df = "FROM x AS a\nCOPY --from=a / /\nCOPY target/release/genkey /usr/local/bin/genkey\ncopy --chown=1:1 a b /dst/\nRUN true\n";
        assert_eq!(copy_sources(df), ["target/release/genkey", "a", "b"]);
    }

    #[test]
    fn resolves_groups_and_variables() {
        let dir = tempfile::tempdir().unwrap();
        let bake = dir.path().join("docker-bake.hcl");
        std::fs::write(
            &bake,
            r#"
variable "TAG" {
  default = "latest"
}
variable "SBKIT_TEST_UNSET_VARIABLE" {
  default = "d"
}
group "default" {
  targets = ["a"]
}
target "a" {
  dockerfile = "containerfiles/a"
  args = { BASE = "b:${TAG}", OTHER = "${SBKIT_TEST_UNSET_VARIABLE}" }
  tags = ["a:${TAG}"]
  labels = { "org.opencontainers.image.title" = "a" }
}
target "b" {
  context = "sub"
}
"#,
        )
        .unwrap();
        let mut o = BTreeMap::new();
        o.insert("TAG".to_string(), "t1".to_string());
        let t = resolve(&bake, &[], &o).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].tags, ["a:t1"]);
        assert_eq!(t[0].args["BASE"], "b:t1");
        assert_eq!(t[0].args["OTHER"], "d");
        assert_eq!(t[0].labels["org.opencontainers.image.title"], "a");
        let b = resolve(&bake, &["b".into()], &o).unwrap();
        assert_eq!(b[0].context, dir.path().join("sub"));
        assert_eq!(b[0].dockerfile, "Dockerfile");
        assert!(resolve(&bake, &["nope".into()], &o).is_err());
        let printed = print_form(&t);
        assert_eq!(printed["target"]["a"]["tags"][0], "a:t1");
    }

    #[test]
    fn the_repository_bake_file_has_the_four_images() {
        let bake = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker-bake.hcl");
        let mut o = BTreeMap::new();
        o.insert("TAG".to_string(), "x".to_string());
        let t = resolve(&bake, &[], &o).unwrap();
        let names: Vec<&str> = t.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["genkey", "build-uki", "enroll", "sbkit-qemu"]);
        for t in &t {
            assert_eq!(t.tags, [format!("{}:x", t.name)]);
            assert!(t.context.join(&t.dockerfile).is_file(), "{}", t.dockerfile);
        }
    }
}

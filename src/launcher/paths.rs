//! A tool's arguments translated for its container, with the tool's own
//! grammar: the user's argv is parsed by the same clap command the tool
//! parses with (`cli::tools`), the path-marked arguments (`cli::path_arg`)
//! are found there, and exactly the tokens carrying their values are
//! rewritten and exactly the paths they name are mounted.
//!
//! Where a value sits in argv is also asked of clap, not guessed: each token
//! in turn is parsed again with a marker appended, and the token whose change
//! shows up as exactly that marker on exactly one path value carries it (a
//! value is always the tail of its token: `--flag value`, `--flag=value`,
//! `-fvalue`, a positional). The rewritten argv is parsed once more and must
//! give the translated values, so a translation never changes what the tool
//! is asked to do.
//!
//! Paths appear in the container at the same absolute path (so messages name
//! what the user typed), except under the image's system directories, which
//! move below `/host`. Inputs are mounted read-only; output directories
//! read-write; an output file through a directory made for it next to the
//! file (see `run`), never its whole parent. `/` and the home directory as a
//! whole are never mounted.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};
use serde::Serialize;

use crate::cli::path_arg::{host_path, kind_of, PathKind};

/// One bind mount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// Host path.
    pub host: PathBuf,
    /// Path in the container.
    pub container: PathBuf,
    /// Read-only.
    pub read_only: bool,
}

impl Mount {
    /// The engine's `Binds` form, `host:container[:ro]`.
    pub fn bind(&self) -> String {
        format!(
            "{}:{}{}",
            self.host.display(),
            self.container.display(),
            if self.read_only { ":ro" } else { "" }
        )
    }
}

/// Output files written through a directory made for them: the launcher
/// makes `parent/.sbkit-out-*`, mounts it where `parent` is in the
/// container, and moves the named files into `parent` after the run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StagedOutputs {
    /// The directory the files belong in (on the host).
    pub parent: PathBuf,
    /// The file names the tool may write there.
    pub names: Vec<OsString>,
}

/// A path-marked value found on the command line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MarkedValue {
    /// Index of the token in the tool's arguments.
    pub token: usize,
    /// The argument's id (`output_dir`, `source`, ...), with its subcommand path.
    pub arg: String,
    /// How it is used.
    #[serde(skip)]
    pub kind: PathKind,
    /// The value as typed.
    pub value: String,
    /// Whether it names a host path.
    pub is_path: bool,
}

/// The arguments rewritten for the container and what they need.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Translated {
    /// Arguments as the tool in the container sees them.
    pub args: Vec<String>,
    /// Mounts, one per distinct host path.
    pub mounts: Vec<Mount>,
    /// Output directories to create before the container starts: the engine
    /// would create a missing bind source as root, which the caller's uid
    /// inside the container could not write.
    pub create_dirs: Vec<PathBuf>,
    /// Output files and the directories they are written through.
    pub staged: Vec<StagedOutputs>,
    /// Every path-marked value given on the command line.
    pub values: Vec<MarkedValue>,
    /// The subcommand path (`token create`), empty for none.
    pub subcommand: Vec<String>,
}

impl Translated {
    /// Whether the run needs a token: a `pkcs11:` key, or genkey's `token` commands.
    pub fn wants_token(&self, tool: &str) -> bool {
        self.values
            .iter()
            .any(|v| v.kind == PathKind::Key && v.value.starts_with("pkcs11:"))
            || (tool == "genkey" && self.subcommand.first().is_some_and(|s| s == "token"))
    }

    /// Whether the run needs the network: only build-uki reading a registry
    /// image does (every other source is a host path mounted in).
    pub fn wants_network(&self, tool: &str) -> bool {
        tool == "build-uki"
            && self.subcommand.is_empty()
            && self
                .values
                .iter()
                .any(|v| v.kind == PathKind::Source && !v.is_path)
    }
}

/// Why arguments cannot be translated.
#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    /// The arguments do not parse: clap's own message, shown as clap shows it.
    #[error("{0}")]
    Grammar(#[from] clap::Error),
    /// Not a tool the launcher knows.
    #[error("{0:?} is not one of sbkit's tools (genkey, build-uki, enroll, test-boot)")]
    UnknownTool(String),
    /// A mount that would expose too much.
    #[error("{arg}: {path} is {what}; sbkit does not mount it into a container as a whole. Name a directory below it{hint}")]
    TooWide {
        /// The argument.
        arg: String,
        /// The path.
        path: String,
        /// `the root directory` / `your home directory`.
        what: &'static str,
        /// Advice specific to the argument.
        hint: String,
    },
    /// The value of a path argument could not be placed in argv.
    #[error("cannot tell which argument carries {arg} {value:?}; give it as --flag=VALUE, or run with --native")]
    Unplaced {
        /// The argument.
        arg: String,
        /// Its value.
        value: String,
    },
    /// The translated arguments would mean something else to the tool.
    #[error("translating the arguments for the container changed {arg} (expected {expected:?}, got {got:?}); run with --native and report this")]
    Changed {
        /// The argument.
        arg: String,
        /// What it should have become.
        expected: String,
        /// What the tool would read.
        got: String,
    },
}

/// Container directories a mount must not cover.
/// `/tmp` is the tools' own scratch space, so a working directory there moves too.
const SYSTEM_DIRS: [&str; 14] = [
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/usr",
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/var/lib",
    "/opt/sbkit",
    "/tmp",
    "/home/sbkit",
];

/// Where a host path lives in the container.
pub fn container_path(host: &Path) -> PathBuf {
    let system = host == Path::new("/") || SYSTEM_DIRS.iter().any(|d| host.starts_with(d));
    if system {
        Path::new("/host").join(host.strip_prefix("/").unwrap_or(host))
    } else {
        host.to_path_buf()
    }
}

/// `path` made absolute against `cwd`, with `.` and `..` resolved lexically.
pub fn absolute(path: &Path, cwd: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        cwd.join(path)
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// Appended to one token at a time to see which value it carries. Control
/// characters keep it from ever meeting a real argument.
const PROBE: &str = "\u{1f}sbkit-probe\u{1f}";

/// Key of one value: (subcommand path, argument id, occurrence, index in the occurrence).
type ValueKey = (String, String, usize, usize);

/// A path-marked value with its kind.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Found {
    kind: PathKind,
    value: String,
}

/// The path-marked values given on the command line, per key.
fn marked_values(cmd: &Command, m: &ArgMatches, path: &str) -> BTreeMap<ValueKey, Found> {
    let mut out = BTreeMap::new();
    for arg in cmd.get_arguments() {
        let Some(kind) = kind_of(arg) else { continue };
        let id = arg.get_id().as_str();
        if m.value_source(id) != Some(ValueSource::CommandLine) {
            continue;
        }
        let Ok(Some(occurrences)) = m.try_get_raw_occurrences(id) else {
            continue;
        };
        for (o, occurrence) in occurrences.enumerate() {
            for (i, v) in occurrence.enumerate() {
                out.insert(
                    (path.to_string(), id.to_string(), o, i),
                    Found {
                        kind,
                        value: v.to_string_lossy().into_owned(),
                    },
                );
            }
        }
    }
    if let Some((name, sub)) = m.subcommand() {
        if let Some(sc) = cmd.find_subcommand(name) {
            out.extend(marked_values(sc, sub, &format!("{path}{name} ")));
        }
    }
    out
}

/// The deepest matched command and its matches, with the subcommand names on the way.
fn leaf<'a>(
    cmd: &'a Command,
    m: &'a ArgMatches,
    names: &mut Vec<String>,
) -> (&'a Command, &'a ArgMatches) {
    if let Some((name, sub)) = m.subcommand() {
        if let Some(sc) = cmd.find_subcommand(name) {
            names.push(name.to_string());
            return leaf(sc, sub, names);
        }
    }
    (cmd, m)
}

/// Path-marked arguments of the leaf command that take their default value
/// (and are not set aside by an argument that conflicts with them).
fn defaults(cmd: &Command, m: &ArgMatches) -> Vec<(String, Option<String>, PathKind, String)> {
    let mut out = Vec::new();
    for arg in cmd.get_arguments() {
        let Some(kind) = kind_of(arg) else { continue };
        let id = arg.get_id().as_str();
        if m.value_source(id) != Some(ValueSource::DefaultValue) {
            continue;
        }
        let conflicted = cmd
            .get_arg_conflicts_with(arg)
            .iter()
            .any(|c| m.value_source(c.get_id().as_str()) == Some(ValueSource::CommandLine));
        if conflicted {
            continue;
        }
        let Ok(Some(mut raw)) = m.try_get_raw(id) else {
            continue;
        };
        if let Some(v) = raw.next() {
            out.push((
                id.to_string(),
                arg.get_long().map(str::to_string),
                kind,
                v.to_string_lossy().into_owned(),
            ));
        }
    }
    out
}

fn parse(cmd: &Command, tool: &str, args: &[String]) -> Result<ArgMatches, clap::Error> {
    cmd.clone()
        .try_get_matches_from(std::iter::once(tool.to_string()).chain(args.iter().cloned()))
}

/// Which token carries each path-marked value, asked of clap (see the module docs).
fn place(
    cmd: &Command,
    tool: &str,
    args: &[String],
    base: &BTreeMap<ValueKey, Found>,
) -> Result<BTreeMap<ValueKey, usize>, TranslateError> {
    let mut placed: BTreeMap<ValueKey, usize> = BTreeMap::new();
    if base.is_empty() {
        return Ok(placed);
    }
    for i in 0..args.len() {
        let mut probe = args.to_vec();
        probe[i].push_str(PROBE);
        let Ok(m) = parse(cmd, tool, &probe) else {
            continue;
        };
        let changed = marked_values(cmd, &m, "");
        if changed.len() != base.len() || !changed.keys().eq(base.keys()) {
            continue;
        }
        let diffs: Vec<&ValueKey> = base
            .iter()
            .filter(|(k, v)| changed.get(*k).map(|c| &c.value) != Some(&v.value))
            .map(|(k, _)| k)
            .collect();
        if let [key] = diffs.as_slice() {
            let before = &base[*key].value;
            if changed[*key].value == format!("{before}{PROBE}")
                && args[i].ends_with(before.as_str())
            {
                placed.insert((*key).clone(), i);
            }
        }
    }
    for (k, v) in base {
        if !placed.contains_key(k) {
            return Err(TranslateError::Unplaced {
                arg: k.1.clone(),
                value: v.value.clone(),
            });
        }
    }
    Ok(placed)
}

/// What a run of `tool ARGS` from `cwd` needs: rewritten arguments and the
/// mounts, directories and staged outputs they imply. `home` is the caller's
/// home directory (never mounted as a whole).
pub fn translate(
    tool: &str,
    args: &[String],
    cwd: &Path,
    home: Option<&Path>,
) -> Result<Translated, TranslateError> {
    let cmd = crate::cli::tools::command(tool)
        .ok_or_else(|| TranslateError::UnknownTool(tool.to_string()))?;
    let matches = match parse(&cmd, tool, args) {
        Ok(m) => m,
        // --help and --version: the tool in its container answers them.
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            return Ok(Translated {
                args: args.to_vec(),
                ..Default::default()
            })
        }
        Err(e) => return Err(e.into()),
    };
    let base = marked_values(&cmd, &matches, "");
    let placed = place(&cmd, tool, args, &base)?;
    let exists = |p: &Path| absolute(p, cwd).exists();

    let mut plan = Planner {
        cwd,
        home,
        out: Translated {
            args: args.to_vec(),
            ..Default::default()
        },
        staged_files: Vec::new(),
    };
    let mut expected: BTreeMap<ValueKey, String> = BTreeMap::new();
    for (key, found) in &base {
        let token = placed[key];
        let arg = format!("{}{}", key.0, key.1);
        let split = host_path(found.kind, &found.value, &exists);
        plan.out.values.push(MarkedValue {
            token,
            arg: arg.clone(),
            kind: found.kind,
            value: found.value.clone(),
            is_path: split.is_some(),
        });
        let Some((prefix, path, suffix)) = split else {
            expected.insert(key.clone(), found.value.clone());
            continue;
        };
        let inside = plan.map(&arg, Path::new(path), found.kind, true)?;
        let value = format!("{prefix}{}{suffix}", inside.display());
        let t = &mut plan.out.args[token];
        let head = t.len() - found.value.len();
        t.truncate(head);
        t.push_str(&value);
        expected.insert(key.clone(), value);
    }

    let mut names = Vec::new();
    let (leaf_cmd, leaf_m) = leaf(&cmd, &matches, &mut names);
    for (id, long, kind, value) in defaults(leaf_cmd, leaf_m) {
        let host = absolute(Path::new(&value), cwd);
        // A relative default resolves against the container's working directory
        // (where the working directory is): only an absolute one may need moving.
        let moved = Path::new(&value).is_absolute() && container_path(&host) != host;
        // A default outside the working directory is mounted only when it exists
        // (efivarfs, the TPM event log); one below it is where the tool writes.
        if Path::new(&value).is_absolute() && !host.exists() {
            continue;
        }
        let inside = plan.map(
            &id,
            Path::new(&value),
            kind,
            !Path::new(&value).is_absolute(),
        )?;
        if moved {
            if let Some(long) = long {
                let flag = format!("--{long}={}", inside.display());
                match plan.out.args.iter().position(|a| a == "--") {
                    Some(i) => plan.out.args.insert(i, flag),
                    None => plan.out.args.push(flag),
                }
            }
        }
    }
    plan.out.subcommand = names;
    plan.finish();

    // The rewritten argv must mean the same to the tool, with the paths moved.
    let check = parse(&cmd, tool, &plan.out.args)?;
    let after = marked_values(&cmd, &check, "");
    for (key, want) in &expected {
        let got = after.get(key).map(|f| f.value.clone()).unwrap_or_default();
        if &got != want {
            return Err(TranslateError::Changed {
                arg: key.1.clone(),
                expected: want.clone(),
                got,
            });
        }
    }
    Ok(plan.out)
}

struct Planner<'a> {
    cwd: &'a Path,
    home: Option<&'a Path>,
    out: Translated,
    /// Output files named on the command line (host paths), settled by `finish`.
    staged_files: Vec<PathBuf>,
}

impl Planner<'_> {
    fn refuse_wide(&self, arg: &str, host: &Path, kind: PathKind) -> Result<(), TranslateError> {
        let what = if host == Path::new("/") {
            "the root directory"
        } else if self.home.is_some_and(|h| h == host) {
            "your home directory"
        } else {
            return Ok(());
        };
        Err(TranslateError::TooWide {
            arg: arg.to_string(),
            path: host.display().to_string(),
            what,
            hint: if kind == PathKind::OutputDir {
                " (for example -d out or -o keys), or run with --native".into()
            } else {
                ", or run with --native".into()
            },
        })
    }

    /// Plans the mount for one path; returns where the tool finds it.
    fn map(
        &mut self,
        arg: &str,
        raw: &Path,
        kind: PathKind,
        create: bool,
    ) -> Result<PathBuf, TranslateError> {
        let host = absolute(raw, self.cwd);
        match kind {
            PathKind::OutputFile => {
                let parent = host.parent().unwrap_or(Path::new("/")).to_path_buf();
                if host.file_name().is_none() {
                    self.refuse_wide(arg, &host, kind)?;
                }
                if !self.out.create_dirs.contains(&parent) && !parent.exists() {
                    self.out.create_dirs.push(parent.clone());
                }
                self.staged_files.push(host.clone());
            }
            PathKind::InOutFile => {
                self.refuse_wide(arg, &host, kind)?;
                // Changed in place, so mounted writable; never made (a
                // missing one is the tool's error, by the name given).
                if host.exists() {
                    self.add(host.clone(), false);
                }
            }
            PathKind::OutputDir => {
                self.refuse_wide(arg, &host, kind)?;
                if create && !self.out.create_dirs.contains(&host) {
                    self.out.create_dirs.push(host.clone());
                }
                self.add(host.clone(), false);
            }
            _ => {
                self.refuse_wide(arg, &host, kind)?;
                // A missing input is not mounted: the tool says it is missing,
                // by the name the user gave (the engine would make it a directory).
                if host.exists() {
                    self.add(host.clone(), true);
                }
            }
        }
        Ok(container_path(&host))
    }

    fn add(&mut self, host: PathBuf, read_only: bool) {
        match self.out.mounts.iter_mut().find(|m| m.host == host) {
            // One path used both ways is mounted read-write.
            Some(existing) => existing.read_only &= read_only,
            None => self.out.mounts.push(Mount {
                container: container_path(&host),
                host,
                read_only,
            }),
        }
    }

    /// Output files: written straight into a directory already mounted
    /// read-write (or mounted anyway as an input, which then becomes
    /// writable), else staged through a directory of their own.
    fn finish(&mut self) {
        for file in std::mem::take(&mut self.staged_files) {
            let parent = file.parent().unwrap_or(Path::new("/")).to_path_buf();
            let name = file.file_name().map(OsString::from).unwrap_or_default();
            if let Some(m) = self.out.mounts.iter_mut().find(|m| m.host == parent) {
                m.read_only = false;
                continue;
            }
            if self
                .out
                .mounts
                .iter()
                .any(|m| !m.read_only && parent.starts_with(&m.host))
            {
                continue;
            }
            match self.out.staged.iter_mut().find(|s| s.parent == parent) {
                Some(s) if s.names.contains(&name) => {}
                Some(s) => s.names.push(name),
                None => self.out.staged.push(StagedOutputs {
                    parent,
                    names: vec![name],
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests;

//! Which arguments of each tool are host paths, and how they appear inside
//! the tool's container: each path is bind-mounted at the same absolute path
//! (so messages and outputs name the paths the user typed), read-only when it
//! is an input. Paths under the container's own system directories are moved
//! below `/host` instead, so a mount never hides the image's files.

use std::path::{Component, Path, PathBuf};

use serde::Serialize;

/// How a path argument is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathUse {
    /// Read: mounted read-only.
    Input,
    /// A directory the tool writes into (created if missing).
    OutputDir,
    /// A file the tool writes: its directory is mounted read-write.
    OutputFile,
}

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

/// The arguments rewritten for the container and the mounts they need.
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

/// Flags taking a path, per tool, and how the path is used.
fn flag_use(tool: &str, flag: &str) -> Option<PathUse> {
    use PathUse::*;
    let u = match (tool, flag) {
        ("genkey", "-o" | "--output") => OutputDir,
        ("genkey", "--custom-cert-dir") => Input,
        ("build-uki", "-d" | "--output-dir") => OutputDir,
        (
            "build-uki",
            "-k" | "--keys" | "--kernel" | "--initrd" | "--os-release" | "--stub" | "--sdboot"
            | "--splash" | "--dtb" | "--overlay-rootfs" | "--overlay-iso" | "--sb-cert" | "--cert",
        ) => Input,
        ("build-uki", "--sb-key" | "--tpm-pcr-private-key") => Input,
        ("enroll", "-k" | "--keys" | "--template" | "--vars" | "--eventlog") => Input,
        ("enroll", "-o" | "--output") => OutputFile,
        ("enroll", "--efivarfs") => OutputDir,
        ("test-boot", "-k" | "--keys") => Input,
        ("test-boot", "--serial-log") => OutputFile,
        _ => return None,
    };
    Some(u)
}

/// Image-source prefixes whose rest is a host path.
const SOURCE_PREFIXES: [&str; 5] = ["dir:", "oci:", "oci-archive:", "docker-archive:", "tar:"];

struct Builder {
    cwd: PathBuf,
    out: Translated,
}

impl Builder {
    fn map(&mut self, raw: &str, usage: PathUse) -> String {
        let host = absolute(Path::new(raw), &self.cwd);
        let (mount_host, read_only) = match usage {
            PathUse::Input => (host.clone(), true),
            PathUse::OutputDir => (host.clone(), false),
            PathUse::OutputFile => (
                host.parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| PathBuf::from("/")),
                false,
            ),
        };
        if usage != PathUse::Input && !self.out.create_dirs.contains(&mount_host) {
            self.out.create_dirs.push(mount_host.clone());
        }
        let mount = Mount {
            container: container_path(&mount_host),
            host: mount_host,
            read_only,
        };
        match self.out.mounts.iter_mut().find(|m| m.host == mount.host) {
            // One path used both ways is mounted read-write.
            Some(existing) => existing.read_only &= mount.read_only,
            None => self.out.mounts.push(mount),
        }
        container_path(&host).display().to_string()
    }
}

/// Rewrites `args` of `tool` for its container.
pub fn translate(tool: &str, args: &[String], cwd: &Path) -> Translated {
    let mut b = Builder {
        cwd: cwd.to_path_buf(),
        out: Translated::default(),
    };
    let mut i = 0;
    let mut positional = 0;
    let mut subcommand: Option<String> = None;
    while i < args.len() {
        let a = &args[i];
        // --flag=value form.
        if let Some((flag, value)) = a.split_once('=').filter(|(f, _)| f.starts_with('-')) {
            match flag_use(tool, flag) {
                Some(_) if value.starts_with("pkcs11:") => b.out.args.push(a.clone()),
                Some(u) => {
                    let mapped = b.map(value, u);
                    b.out.args.push(format!("{flag}={mapped}"));
                }
                None => b.out.args.push(a.clone()),
            }
            i += 1;
            continue;
        }
        if a.starts_with('-') {
            b.out.args.push(a.clone());
            if let Some(u) = flag_use(tool, a) {
                if let Some(v) = args.get(i + 1) {
                    let mapped = if v.starts_with("pkcs11:") {
                        v.clone()
                    } else {
                        b.map(v, u)
                    };
                    b.out.args.push(mapped);
                    i += 1;
                }
            }
            i += 1;
            continue;
        }
        // Positionals.
        let mapped = match (tool, positional, subcommand.as_deref()) {
            ("build-uki", 0, _) if a == "inspect" => {
                subcommand = Some(a.clone());
                a.clone()
            }
            ("build-uki", _, Some("inspect")) => b.map(a, PathUse::Input),
            ("build-uki", 0, None) => match SOURCE_PREFIXES.iter().find(|p| a.starts_with(*p)) {
                Some(p) => format!("{p}{}", b.map(&a[p.len()..], PathUse::Input)),
                None => a.clone(),
            },
            ("enroll", 0, _) => {
                subcommand = Some(a.clone());
                a.clone()
            }
            ("enroll", _, Some("esp")) => b.map(a, PathUse::OutputDir),
            ("test-boot", 0, _) => b.map(a, PathUse::Input),
            _ => a.clone(),
        };
        positional += 1;
        b.out.args.push(mapped);
        i += 1;
    }
    b.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn build_uki_paths_are_mounted_inputs_read_only() {
        let t = translate(
            "build-uki",
            &s(&[
                "dir:rootfs",
                "-t",
                "iso",
                "-d",
                "build",
                "-k",
                "/srv/keys",
                "--sb-key",
                "pkcs11:token=a;id=%02",
                "--kernel=/usr/lib/k",
            ]),
            Path::new("/home/u"),
        );
        assert_eq!(
            t.args,
            s(&[
                "dir:/home/u/rootfs",
                "-t",
                "iso",
                "-d",
                "/home/u/build",
                "-k",
                "/srv/keys",
                "--sb-key",
                "pkcs11:token=a;id=%02",
                "--kernel=/host/usr/lib/k"
            ])
        );
        let rootfs = t
            .mounts
            .iter()
            .find(|m| m.host == Path::new("/home/u/rootfs"))
            .unwrap();
        assert!(rootfs.read_only);
        let build = t
            .mounts
            .iter()
            .find(|m| m.host == Path::new("/home/u/build"))
            .unwrap();
        assert!(!build.read_only);
        assert_eq!(
            t.mounts
                .iter()
                .find(|m| m.host == Path::new("/usr/lib/k"))
                .unwrap()
                .bind(),
            "/usr/lib/k:/host/usr/lib/k:ro"
        );
    }

    #[test]
    fn genkey_name_is_not_a_path_and_enroll_output_file_mounts_its_directory() {
        let t = translate("genkey", &s(&["Acme Corp", "-o", "keys"]), Path::new("/w"));
        assert_eq!(t.args, s(&["Acme Corp", "-o", "/w/keys"]));
        assert_eq!(t.mounts.len(), 1);
        let t = translate(
            "enroll",
            &s(&[
                "ovmf",
                "--template",
                "/t/VARS.fd",
                "-k",
                "k",
                "-o",
                "out/vars.fd",
            ]),
            Path::new("/w"),
        );
        assert!(t
            .mounts
            .iter()
            .any(|m| m.host == Path::new("/w/out") && !m.read_only));
        assert_eq!(
            absolute(Path::new("a/../b/./c"), Path::new("/x")),
            Path::new("/x/b/c")
        );
    }
}

//! Finding boot components inside a root filesystem, never following a
//! symlink out of it.

use std::path::{Component, Path, PathBuf};

/// Where the stub lives in a rootfs with systemd-boot-efi installed.
pub const STUB_PATH: &str = "usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/// Where systemd-boot lives.
pub const SDBOOT_PATH: &str = "usr/lib/systemd/boot/efi/systemd-bootx64.efi";

/// A kernel found in the rootfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelCandidate {
    /// Path inside the rootfs, e.g. `boot/vmlinuz-6.1.0-56-amd64`.
    pub path: PathBuf,
    /// The version part of the name.
    pub version: String,
}

/// Resolves `rel` inside `root`, following symlinks but keeping every step
/// inside `root` (an absolute link target is taken relative to `root`, `..`
/// stops at `root`). Returns `None` when it does not exist.
pub fn resolve_in_root(root: &Path, rel: &Path) -> Option<PathBuf> {
    let mut parts: Vec<std::ffi::OsString> = Vec::new();
    let mut pending: Vec<std::ffi::OsString> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .rev()
        .collect();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            parts.pop();
            continue;
        }
        let here: PathBuf = parts.iter().collect::<PathBuf>().join(&part);
        let meta = std::fs::symlink_metadata(root.join(&here)).ok()?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return None;
            }
            let target = std::fs::read_link(root.join(&here)).ok()?;
            if target.is_absolute() {
                parts.clear();
            }
            for c in target.components().rev() {
                match c {
                    Component::Normal(n) => pending.push(n.to_os_string()),
                    Component::ParentDir => pending.push("..".into()),
                    _ => {}
                }
            }
        } else {
            parts.push(part);
        }
    }
    let full = root.join(parts.iter().collect::<PathBuf>());
    full.exists().then_some(full)
}

/// Compares version strings the way people read them: digit runs as numbers.
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for ch in s.chars() {
            let digit = ch.is_ascii_digit();
            match out.last_mut() {
                Some((d, text)) if *d == digit => text.push(ch),
                _ => out.push((digit, ch.to_string())),
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let ord = match (x.0, y.0) {
            (true, true) => {
                let (xa, ya) = (x.1.trim_start_matches('0'), y.1.trim_start_matches('0'));
                xa.len().cmp(&ya.len()).then_with(|| xa.cmp(ya))
            }
            _ => x.1.cmp(&y.1),
        };
        if ord != std::cmp::Ordering::Equal {
            return ord;
        }
    }
    ca.len().cmp(&cb.len())
}

/// The places kernels are looked for, for messages.
pub const KERNEL_PLACES: &str =
    "/boot/vmlinuz*, /usr/lib/modules/*/vmlinuz, /lib/modules/*/vmlinuz";

/// Every kernel in the rootfs, newest first.
pub fn find_kernels(root: &Path) -> Vec<KernelCandidate> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root.join("boot")) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix("vmlinuz") {
                let rel = PathBuf::from("boot").join(&name);
                if resolve_in_root(root, &rel).is_some_and(|p| p.is_file()) {
                    found.push(KernelCandidate {
                        path: rel,
                        version: rest.trim_start_matches('-').to_string(),
                    });
                }
            }
        }
    }
    for modules in ["usr/lib/modules", "lib/modules"] {
        let Some(dir) = resolve_in_root(root, Path::new(modules)) else {
            continue;
        };
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let version = e.file_name().to_string_lossy().into_owned();
                let rel = PathBuf::from(modules).join(&version).join("vmlinuz");
                if resolve_in_root(root, &rel).is_some_and(|p| p.is_file()) {
                    found.push(KernelCandidate { path: rel, version });
                }
            }
        }
    }
    sort_kernels(&mut found);
    found
}

/// Orders kernel candidates newest first, one per version (`/lib` is often a
/// symlink to `/usr/lib`, which shows each kernel twice).
pub fn sort_kernels(found: &mut Vec<KernelCandidate>) {
    found.sort_by(|a, b| version_cmp(&b.version, &a.version).then_with(|| a.path.cmp(&b.path)));
    found.dedup_by(|a, b| a.version == b.version);
}

/// The os-release file of the rootfs (`/etc/os-release`, else `/usr/lib/os-release`).
pub fn find_os_release(root: &Path) -> Option<PathBuf> {
    ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|p| resolve_in_root(root, Path::new(p)).filter(|p| p.is_file()))
}

/// A file at a fixed path inside the rootfs.
pub fn find_file(root: &Path, rel: &str) -> Option<PathBuf> {
    resolve_in_root(root, Path::new(rel)).filter(|p| p.is_file())
}

/// Reads a `KEY=value` field of os-release text, unquoted.
pub fn os_release_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').trim_matches('\'').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn newest_kernel_first_and_symlinks_stay_inside() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        std::fs::create_dir_all(r.join("boot")).unwrap();
        std::fs::create_dir_all(r.join("usr/lib/modules/6.10.0")).unwrap();
        std::fs::write(r.join("boot/vmlinuz-6.9.0"), b"k").unwrap();
        std::fs::write(r.join("usr/lib/modules/6.10.0/vmlinuz"), b"k").unwrap();
        symlink("usr/lib", r.join("lib")).unwrap();
        let k = find_kernels(r);
        assert_eq!(k[0].version, "6.10.0");
        assert_eq!(k.len(), 2);
        // An absolute symlink resolves inside the root, not on the host.
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(r.join("usr/lib/os-release"), b"ID=x\n").unwrap();
        symlink("/usr/lib/os-release", r.join("etc/os-release")).unwrap();
        assert_eq!(find_os_release(r).unwrap(), r.join("usr/lib/os-release"));
        symlink("../../../../../etc/shadow", r.join("escape")).unwrap();
        assert!(resolve_in_root(r, Path::new("escape")).is_none());
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(version_cmp("6.10.0", "6.9.0"), std::cmp::Ordering::Greater);
        assert_eq!(
            os_release_field("PRETTY_NAME=\"Debian 12\"\n", "PRETTY_NAME").as_deref(),
            Some("Debian 12")
        );
    }
}

//! What a build needs from an OS besides its initrd: the kernels, the
//! systemd-stub, systemd-boot, os-release, and which init program it has.
//!
//! A rootfs directory and a streamed container image give the same
//! [`BootFiles`]: for a directory the files are read in place (symlinks
//! resolved inside the rootfs); for an image they are the copies kept aside
//! while the layers streamed by (see [`super::image`]), resolved against the
//! image's final tree. Callers never need to know which.

use std::path::{Path, PathBuf};

use super::discover::{self, SDBOOT_PATH, STUB_PATH};

/// The init programs looked for, in order: `/init` (what the kernel runs from
/// an initramfs), then the programs `rdinit=` can name.
pub const INIT_CANDIDATES: [&str; 4] = [
    "init",
    "sbin/init",
    "usr/lib/systemd/systemd",
    "lib/systemd/systemd",
];

/// The os-release places, in the order systemd reads them.
pub const OS_RELEASE_PATHS: [&str; 2] = ["etc/os-release", "usr/lib/os-release"];

/// One boot file of the OS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootFile {
    /// How it is shown to the user: a host path for a directory,
    /// `IMAGE:/path` for an image.
    pub shown: String,
    /// Where its bytes are now (valid while the image's temporary files live).
    pub path: PathBuf,
}

/// A kernel of the OS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    /// The version part of its name (`6.1.0-56-amd64`).
    pub version: String,
    /// The file.
    pub file: BootFile,
}

/// The boot files of a rootfs or image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootFiles {
    /// The rootfs or image, for messages (`/srv/rootfs`, `oci:layout:1.0`).
    pub origin: String,
    /// Every kernel, newest first (one per version).
    pub kernels: Vec<Kernel>,
    /// `usr/lib/systemd/boot/efi/linuxx64.efi.stub`.
    pub stub: Option<BootFile>,
    /// `usr/lib/systemd/boot/efi/systemd-bootx64.efi`.
    pub sdboot: Option<BootFile>,
    /// `etc/os-release`, else `usr/lib/os-release`.
    pub os_release: Option<BootFile>,
    /// Whether `/init` exists (then no `rdinit=` is needed).
    pub has_init: bool,
    /// The first of the other [`INIT_CANDIDATES`] present (`sbin/init`, ...).
    pub init_program: Option<String>,
    /// What the booted system will measure and unlock with.
    pub trusted_boot: TrustedBootTraits,
}

/// What decides which PCR 11 phase paths a booted rootfs measures, and
/// whether it can unlock a volume sealed to a signed PCR policy at all.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TrustedBootTraits {
    /// `/etc/initrd-release` (or `/usr/lib/initrd-release`): systemd runs in
    /// initrd mode and measures `enter-initrd` and `leave-initrd`.
    pub initrd_release: bool,
    /// systemd itself (`/usr/lib/systemd/systemd`).
    pub systemd: bool,
    /// `systemd-cryptsetup`, which unlocks the volume.
    pub cryptsetup: bool,
    /// The TPM2 libraries systemd loads (`libtss2-esys`).
    pub tss2: bool,
}

/// Where the files [`TrustedBootTraits`] looks for live, per trait.
const INITRD_RELEASE: [&str; 2] = ["etc/initrd-release", "usr/lib/initrd-release"];
const SYSTEMD: [&str; 2] = ["usr/lib/systemd/systemd", "lib/systemd/systemd"];
const CRYPTSETUP: [&str; 2] = [
    "usr/lib/systemd/systemd-cryptsetup",
    "lib/systemd/systemd-cryptsetup",
];
const TSS2: [&str; 5] = [
    "usr/lib/x86_64-linux-gnu/libtss2-esys.so.0",
    "usr/lib/aarch64-linux-gnu/libtss2-esys.so.0",
    "lib/x86_64-linux-gnu/libtss2-esys.so.0",
    "usr/lib64/libtss2-esys.so.0",
    "usr/lib/libtss2-esys.so.0",
];

impl TrustedBootTraits {
    /// The traits of a rootfs whose paths `present` answers for (a directory
    /// or a flattened image alike).
    pub fn probe(present: impl Fn(&str) -> bool) -> Self {
        let any = |paths: &[&str]| paths.iter().any(|p| present(p));
        TrustedBootTraits {
            initrd_release: any(&INITRD_RELEASE),
            systemd: any(&SYSTEMD),
            cryptsetup: any(&CRYPTSETUP),
            tss2: any(&TSS2),
        }
    }
}

impl BootFiles {
    /// Discovers the boot files of a rootfs directory, never following a
    /// symlink out of it.
    pub fn from_dir(root: &Path) -> BootFiles {
        let file = |p: PathBuf| BootFile {
            shown: p.display().to_string(),
            path: p,
        };
        let kernels = discover::find_kernels(root)
            .into_iter()
            .filter_map(|k| {
                discover::resolve_in_root(root, &k.path).map(|p| Kernel {
                    version: k.version,
                    file: file(p),
                })
            })
            .collect();
        let present = |rel: &str| discover::resolve_in_root(root, Path::new(rel)).is_some();
        BootFiles {
            origin: root.display().to_string(),
            kernels,
            stub: discover::find_file(root, STUB_PATH).map(file),
            sdboot: discover::find_file(root, SDBOOT_PATH).map(file),
            os_release: discover::find_os_release(root).map(file),
            has_init: present(INIT_CANDIDATES[0]),
            init_program: INIT_CANDIDATES[1..]
                .iter()
                .find(|p| present(p))
                .map(|p| p.to_string()),
            trusted_boot: TrustedBootTraits::probe(present),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_gives_its_files_and_init() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        for d in ["boot", "etc", "sbin", "usr/lib/systemd/boot/efi"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(r.join("boot/vmlinuz-6.1"), b"k").unwrap();
        std::fs::write(r.join("boot/vmlinuz-6.10"), b"k").unwrap();
        std::fs::write(r.join("etc/os-release"), b"ID=x\n").unwrap();
        std::fs::write(r.join("sbin/init"), b"").unwrap();
        std::fs::write(r.join(STUB_PATH), b"stub").unwrap();
        let b = BootFiles::from_dir(r);
        assert_eq!(b.kernels.len(), 2);
        assert_eq!(b.kernels[0].version, "6.10");
        assert_eq!(b.kernels[0].file.path, r.join("boot/vmlinuz-6.10"));
        assert_eq!(b.stub.unwrap().path, r.join(STUB_PATH));
        assert!(b.sdboot.is_none());
        assert_eq!(b.os_release.unwrap().path, r.join("etc/os-release"));
        assert!(!b.has_init);
        assert_eq!(b.init_program.as_deref(), Some("sbin/init"));
        assert_eq!(b.trusted_boot, TrustedBootTraits::default());
        std::fs::write(r.join("etc/initrd-release"), b"").unwrap();
        std::fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
        std::fs::write(r.join("usr/lib/systemd/systemd"), b"").unwrap();
        let t = BootFiles::from_dir(r).trusted_boot;
        assert!(t.initrd_release && t.systemd && !t.cryptsetup && !t.tss2);
    }
}

//! Guest side of boot tests: the fetched kernel and busybox (`scripts/fetch-assets.sh`),
//! and busybox initramfs images whose `/init` mounts efivarfs, reports the firmware's
//! Secure Boot state on the serial console, runs a test script and powers off.
//!
//! The initramfs is a cpio "newc" archive written here with std only, then gzipped with
//! the host's `gzip` (essential on Debian), which every kernel we boot accepts.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Vendor GUID of the EFI global variables (PK, KEK, SetupMode, SecureBoot).
pub const EFI_GLOBAL_VARIABLE: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// Vendor GUID of the image security database variables (db, dbx).
pub const IMAGE_SECURITY_DATABASE: &str = "d719b2cb-3d3a-4596-a3bc-dad00e67656f";

/// Where the guest mounts efivarfs.
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";

/// Printed by `/init` once the console is set up, before anything else of ours.
pub const MARK_START: &str = "SBKIT-GUEST: start";
/// Printed by `/init` when the test script exited 0.
pub const MARK_PASS: &str = "SBKIT-GUEST: PASS";
/// Printed by `/init` (followed by ` rc=N`) when the test script failed.
pub const MARK_FAIL: &str = "SBKIT-GUEST: FAIL";
/// Prefix of the lines `/init` prints for firmware variables: `SBKIT-EFIVAR Name=hex`.
pub const EFIVAR_PREFIX: &str = "SBKIT-EFIVAR ";

/// Kernel command line for a guest booted with `-kernel`: serial console, and a panic
/// (e.g. `/init` failing) reboots at once, which `-no-reboot` turns into QEMU exiting.
pub const DEFAULT_APPEND: &str = "console=ttyS0 panic=-1 quiet";

pub use super::tools::cache_dir;

/// The assets `scripts/fetch-assets.sh` puts in `<cache>/assets`.
#[derive(Debug, Clone)]
pub struct Assets {
    /// The assets directory.
    pub dir: PathBuf,
}

impl Assets {
    /// Locates the assets; panics naming the fetch script when they are missing, because
    /// a boot test must never pass without booting.
    pub fn locate() -> Assets {
        let dir = cache_dir().join("assets");
        let assets = Assets { dir };
        for needed in [assets.kernel(), assets.busybox()] {
            assert!(
                needed.is_file(),
                "boot-test asset {} is missing: run scripts/fetch-assets.sh \
                 (after scripts/install-deps.sh)",
                needed.display()
            );
        }
        assets
    }

    /// The Debian bookworm kernel image (bzImage with EFI stub).
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }

    /// The kernel's release string, e.g. `6.1.0-56-amd64`.
    pub fn kernel_release(&self) -> String {
        let file = self.dir.join("kernel-release");
        fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}; run scripts/fetch-assets.sh", file.display()))
            .trim()
            .to_string()
    }

    /// The kernel's module tree (`lib/modules/<release>` of the unpacked package).
    pub fn modules_dir(&self) -> PathBuf {
        self.dir
            .join("linux/lib/modules")
            .join(self.kernel_release())
    }

    /// A module of the fetched kernel, by path below the module tree
    /// (e.g. `kernel/fs/efivarfs/efivarfs.ko`).
    pub fn module(&self, rel: &str) -> PathBuf {
        let path = self.modules_dir().join(rel);
        assert!(
            path.is_file(),
            "kernel module {} is missing: run scripts/fetch-assets.sh",
            path.display()
        );
        path
    }

    /// The static busybox.
    pub fn busybox(&self) -> PathBuf {
        self.dir.join("busybox")
    }

    /// Root of the unpacked systemd packages of one generation (252 or 254).
    pub fn systemd_root(&self, generation: u32) -> PathBuf {
        let root = self.dir.join(format!("systemd-{generation}"));
        assert!(
            root.is_dir(),
            "{} is missing: run scripts/fetch-assets.sh",
            root.display()
        );
        root
    }

    /// systemd-stub (`linuxx64.efi.stub`) of one systemd generation.
    pub fn stub(&self, generation: u32) -> PathBuf {
        self.systemd_root(generation)
            .join("usr/lib/systemd/boot/efi/linuxx64.efi.stub")
    }

    /// systemd-boot (`systemd-bootx64.efi`) of one systemd generation.
    pub fn systemd_boot(&self, generation: u32) -> PathBuf {
        self.systemd_root(generation)
            .join("usr/lib/systemd/boot/efi/systemd-bootx64.efi")
    }
}

/// One node of an initramfs.
#[derive(Debug, Clone)]
enum Node {
    Dir { mode: u32 },
    File { data: Vec<u8>, mode: u32 },
    Symlink { target: String },
}

/// An initramfs under construction: paths (without leading `/`) to nodes. Kept sorted,
/// so every directory is written before what it contains, as the kernel's unpacker needs.
#[derive(Debug, Clone, Default)]
pub struct Initramfs {
    nodes: BTreeMap<String, Node>,
}

/// The `/init` of a guest: sets up the console and efivarfs, reports the Secure Boot
/// state, runs `/sbkit/test.sh`, reports its result and powers off.
const INIT: &str = r#"#!/bin/sh
export PATH=/bin:/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
# The kernel's console is the serial port (console=ttyS0); all our output goes there.
exec </dev/console >/dev/console 2>&1
echo "SBKIT-GUEST: start kernel=$(uname -r)"
# efivarfs is a module on Debian kernels; a built-in one makes insmod fail harmlessly.
for m in /lib/modules/sbkit/*.ko; do [ -e "$m" ] && insmod "$m"; done
mount -t efivarfs efivarfs /sys/firmware/efi/efivars || echo "SBKIT-GUEST: efivarfs mount failed"
# efivarfs files are 4 attribute bytes then the value. Copy first: efivarfs cannot seek.
efivar_hex() {
  if cat "/sys/firmware/efi/efivars/$1" >/tmp/efivar 2>/dev/null; then
    od -An -v -tx1 -j4 /tmp/efivar | tr -d ' \n'
  else
    echo absent
  fi
}
for v in SetupMode SecureBoot; do
  echo "SBKIT-EFIVAR $v=$(efivar_hex $v-8be4df61-93ca-11d2-aa0d-00e098032b8c)"
done
sh /sbkit/test.sh
rc=$?
if [ $rc = 0 ]; then echo "SBKIT-GUEST: PASS"; else echo "SBKIT-GUEST: FAIL rc=$rc"; fi
sync
poweroff -f
"#;

impl Initramfs {
    /// An empty archive.
    pub fn new() -> Initramfs {
        Initramfs::default()
    }

    /// The standard guest: busybox with its applet links, the base directories, the
    /// kernel's efivarfs module, the `/init` above, and `script` as `/sbkit/test.sh`
    /// (run by `sh`; exit 0 means pass). Add test files with [`Initramfs::file`].
    pub fn guest(assets: &Assets, script: &str) -> Initramfs {
        let mut ramfs = Initramfs::new();
        for dir in ["dev", "proc", "sys", "tmp", "sbin", "usr/bin", "sbkit"] {
            ramfs.dir(dir, 0o755);
        }
        ramfs.host_file("bin/busybox", &assets.busybox(), 0o755);
        for applet in busybox_applets(&assets.busybox()) {
            if applet != "busybox" {
                ramfs.symlink(&format!("bin/{applet}"), "busybox");
            }
        }
        ramfs.host_file(
            "lib/modules/sbkit/efivarfs.ko",
            &assets.module("kernel/fs/efivarfs/efivarfs.ko"),
            0o644,
        );
        ramfs.file("init", INIT.as_bytes(), 0o755);
        ramfs.file("sbkit/test.sh", script.as_bytes(), 0o755);
        ramfs
    }

    /// Adds a directory (and its parents).
    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        let path = normalize(path);
        self.parents(&path);
        self.nodes.insert(path, Node::Dir { mode });
        self
    }

    /// Adds a regular file with the given contents (and its parent directories).
    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) -> &mut Self {
        let path = normalize(path);
        self.parents(&path);
        let data = data.to_vec();
        self.nodes.insert(path, Node::File { data, mode });
        self
    }

    /// Adds a copy of a host file.
    pub fn host_file(&mut self, path: &str, host: &Path, mode: u32) -> &mut Self {
        let data = fs::read(host).unwrap_or_else(|e| panic!("reading {}: {e}", host.display()));
        self.file(path, &data, mode)
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let path = normalize(path);
        self.parents(&path);
        let target = target.to_string();
        self.nodes.insert(path, Node::Symlink { target });
        self
    }

    /// Adds a dynamically linked host program as `/usr/bin/<name>` with the shared
    /// libraries `ldd` names, at the paths the host has them (the guest's ld.so finds
    /// them in its default multiarch directories). For tools busybox lacks, e.g.
    /// `chattr` (efivarfs marks most variables immutable).
    pub fn host_binary(&mut self, host: &Path) -> &mut Self {
        let name = host
            .file_name()
            .unwrap_or_else(|| panic!("{} has no file name", host.display()))
            .to_string_lossy()
            .into_owned();
        self.host_file(&format!("usr/bin/{name}"), host, 0o755);
        for lib in shared_libraries(host) {
            self.host_file(&lib.to_string_lossy(), &lib, 0o755);
        }
        self
    }

    /// Whether the archive has an entry at `path`.
    pub fn contains(&self, path: &str) -> bool {
        self.nodes.contains_key(&normalize(path))
    }

    fn parents(&mut self, path: &str) {
        let mut end = 0;
        while let Some(pos) = path[end..].find('/') {
            end += pos;
            self.nodes
                .entry(path[..end].to_string())
                .or_insert(Node::Dir { mode: 0o755 });
            end += 1;
        }
    }

    /// The uncompressed cpio newc archive. Entries are sorted, owned by root, with
    /// mtime 0 and sequential inode numbers, so equal inputs give equal bytes.
    pub fn to_cpio(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, node)) in self.nodes.iter().enumerate() {
            let (mode, data): (u32, &[u8]) = match node {
                Node::Dir { mode } => (0o040000 | mode, &[]),
                Node::File { data, mode } => (0o100000 | mode, data),
                Node::Symlink { target } => (0o120777, target.as_bytes()),
            };
            let nlink = if matches!(node, Node::Dir { .. }) {
                2
            } else {
                1
            };
            cpio_entry(&mut out, ino as u32 + 1, mode, nlink, path, data);
        }
        cpio_entry(&mut out, 0, 0, 1, "TRAILER!!!", &[]);
        out
    }

    /// Writes the archive gzip-compressed to `out` (for QEMU's `-initrd`).
    pub fn write_gz(&self, out: &Path) {
        let mut gzip = Command::new("gzip")
            .args(["-n", "-1", "-c"])
            .stdin(Stdio::piped())
            .stdout(
                fs::File::create(out).unwrap_or_else(|e| panic!("creating {}: {e}", out.display())),
            )
            .spawn()
            .unwrap_or_else(|e| panic!("running gzip: {e}"));
        let cpio = self.to_cpio();
        // gzip writes straight to the file, so feeding all input before waiting cannot
        // deadlock on a full output pipe.
        gzip.stdin
            .take()
            .expect("gzip stdin")
            .write_all(&cpio)
            .unwrap_or_else(|e| panic!("feeding gzip: {e}"));
        let status = gzip.wait().expect("waiting for gzip");
        assert!(status.success(), "gzip failed: {status}");
    }
}

/// Archive paths have no leading `/` (the newc convention); `.` components are dropped.
fn normalize(path: &str) -> String {
    path.split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn cpio_entry(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, name: &str, data: &[u8]) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        data.len() as u32,
        0, // devmajor
        0, // devminor
        0, // rdevmajor
        0, // rdevminor
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// The applets a busybox binary provides (`busybox --list`).
fn busybox_applets(busybox: &Path) -> Vec<String> {
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .unwrap_or_else(|e| panic!("running {} --list: {e}", busybox.display()));
    assert!(out.status.success(), "{} --list failed", busybox.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|applet| !applet.is_empty() && !applet.contains('/'))
        .map(str::to_string)
        .collect()
}

/// The value bytes of one firmware variable as `/init` printed it
/// (`SBKIT-EFIVAR Name=hex`), or `None` when the line is absent.
pub fn efivar_from_log(log: &str, name: &str) -> Option<String> {
    let prefix = format!("{EFIVAR_PREFIX}{name}=");
    log.lines()
        .find_map(|line| line.trim().strip_prefix(prefix.as_str()))
        .map(|value| value.trim().to_string())
}

/// The bytes of an efivarfs write: attributes (u32 little-endian) then the payload,
/// e.g. an EFI_VARIABLE_AUTHENTICATION_2 `.auth` file.
pub fn efivarfs_payload(attributes: u32, data: &[u8]) -> Vec<u8> {
    let mut out = attributes.to_le_bytes().to_vec();
    out.extend_from_slice(data);
    out
}

/// The shared libraries `ldd` names for `host` (the dynamic loader included).
fn shared_libraries(host: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd")
        .arg(host)
        .output()
        .unwrap_or_else(|e| panic!("running ldd {}: {e}", host.display()));
    // Lines look like "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or
    // "/lib64/ld-linux-x86-64.so.2 (0x…)"; linux-vdso has no file.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().find(|w| w.starts_with('/')))
        .map(PathBuf::from)
        .collect()
}

/// Copies a dynamically linked host program into a root filesystem at `root` as
/// `/usr/bin/<name>`, with its shared libraries at the host's paths (like
/// [`Initramfs::host_binary`] does for an archive).
pub fn copy_host_binary(host: &Path, root: &Path) {
    let name = host
        .file_name()
        .unwrap_or_else(|| panic!("{} has no file name", host.display()));
    let mut files = vec![(host.to_path_buf(), root.join("usr/bin").join(name))];
    for lib in shared_libraries(host) {
        let inside = root.join(lib.strip_prefix("/").unwrap_or(&lib));
        files.push((lib, inside));
    }
    for (from, to) in files {
        std::fs::create_dir_all(to.parent().expect("a path in the rootfs has a parent"))
            .unwrap_or_else(|e| panic!("creating the directory of {}: {e}", to.display()));
        std::fs::copy(&from, &to)
            .unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
    }
}

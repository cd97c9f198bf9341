//! FAT images (the ESP inside an ISO), written with mtools (`mformat`,
//! `mcopy`): fsck-clean, reproducible (fixed volume id, timestamps from
//! `SOURCE_DATE_EPOCH`), sized to fit. The `fatfs` crate was tried first; its
//! 0.3 release writes long-name entries for `.`/`..` that fsck.vfat rejects.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Building the image failed.
#[derive(Debug, thiserror::Error)]
pub enum FatError {
    /// I/O in the staging area.
    #[error("building the FAT image: {0}")]
    Io(#[from] std::io::Error),
    /// mtools is missing or failed.
    #[error("{tool} failed ({status}): {stderr}; mtools must be installed (Debian: apt-get install mtools)")]
    Tool {
        /// Which tool.
        tool: &'static str,
        /// Exit status or spawn error.
        status: String,
        /// What it said.
        stderr: String,
    },
}

/// Files of a FAT image: path (with `/`) → contents, sorted.
pub type FileTree = BTreeMap<String, Vec<u8>>;

/// The oldest time FAT can store (1980-01-01), used when no time is given.
const FAT_EPOCH: u64 = 315_532_800;

/// The image size for `files`: contents rounded to 4 KiB clusters, two
/// clusters per directory, room for FATs, and 10% slack; whole MiB.
pub fn image_size(files: &FileTree) -> u64 {
    let cluster = 4096u64;
    let data: u64 = files
        .values()
        .map(|f| (f.len() as u64).div_ceil(cluster) * cluster)
        .sum();
    let dirs = files.keys().filter(|k| k.contains('/')).count() as u64 * cluster * 2;
    let raw = data + dirs + 2 * 1024 * 1024;
    let total = raw + raw / 512 + raw / 10;
    total.div_ceil(1024 * 1024) * 1024 * 1024
}

fn run(tool: &'static str, args: &[&std::ffi::OsStr], mtime: u64) -> Result<(), FatError> {
    let out = Command::new(tool)
        .args(args)
        .env("SOURCE_DATE_EPOCH", mtime.to_string())
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .map_err(|e| FatError::Tool {
            tool,
            status: e.to_string(),
            stderr: String::new(),
        })?;
    if !out.status.success() {
        return Err(FatError::Tool {
            tool,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Writes a FAT image holding `files` at `out`. `mtime` (seconds since
/// 1970, 0 for the FAT epoch) stamps every entry.
pub fn build_image(
    files: &FileTree,
    label: &str,
    volume_id: u32,
    mtime: u64,
    out: &Path,
) -> Result<(), FatError> {
    let mtime = mtime.max(FAT_EPOCH);
    let staging = tempfile::tempdir()?;
    let stamp = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
    let mut top = std::collections::BTreeSet::new();
    for (path, contents) in files {
        let p = staging.path().join(path.trim_start_matches('/'));
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, contents)?;
        std::fs::File::options()
            .write(true)
            .open(&p)?
            .set_modified(stamp)?;
        if let Some(first) = path.trim_start_matches('/').split('/').next() {
            top.insert(first.to_string());
        }
    }
    let img = std::fs::File::create(out)?;
    img.set_len(image_size(files))?;
    drop(img);
    let label_arg = label.to_ascii_uppercase();
    let id = format!("{volume_id:08x}");
    run(
        "mformat",
        &[
            "-i".as_ref(),
            out.as_os_str(),
            "-v".as_ref(),
            label_arg.as_ref(),
            "-N".as_ref(),
            id.as_ref(),
            "::".as_ref(),
        ],
        mtime,
    )?;
    for name in top {
        let src = staging.path().join(&name);
        // -p keeps the staged (fixed) mtimes; -s recurses; -Q stops at the first error.
        run(
            "mcopy",
            &[
                "-s".as_ref(),
                "-p".as_ref(),
                "-Q".as_ref(),
                "-i".as_ref(),
                out.as_os_str(),
                src.as_os_str(),
                "::/".as_ref(),
            ],
            mtime,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_files_same_image() {
        let mut t = FileTree::new();
        t.insert("EFI/BOOT/BOOTX64.EFI".into(), vec![1; 5000]);
        t.insert("loader/loader.conf".into(), b"timeout 5\n".to_vec());
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
        build_image(&t, "ESP", 0x1234_5678, 1_700_000_000, &a).unwrap();
        build_image(&t, "ESP", 0x1234_5678, 1_700_000_000, &b).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(std::fs::metadata(&a).unwrap().len(), image_size(&t));
    }
}

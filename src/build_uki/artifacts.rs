//! `-t iso` and `-t container`: the built UKIs put on boot media.
//!
//! ISO: a FAT ESP image with systemd-boot (signed with the db key) as the
//! removable-media loader, the UKIs under `/EFI/kairos/`, loader.conf and
//! entries, and the key directory's `.auth` files under `loader/keys/auto/`
//! for systemd-boot's enrollment; wrapped in a hybrid ISO by xorriso.

use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::Digest;

use super::stage::Staging;
use super::{read, BuildUkiError, BuildUkiOptions};
use crate::media::fat::{build_image, FileTree};
use crate::media::iso::{write_iso as xorriso_iso, IsoError, VOLUME_LABEL};
use crate::media::loader::{choose_enroll, loader_conf, sdboot_version, LoaderError};
use crate::pe::authenticode::{self, AuthenticodeError};
use crate::rootfs::boot_files::BootFiles;
use crate::rootfs::discover::SDBOOT_PATH;
use crate::uki::entries::EFI_DIR;

/// Where the build image keeps its fallback systemd-boot.
pub const BUILTIN_SDBOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

/// One signed UKI ready for the media.
pub struct BuiltImage {
    /// Entry name.
    pub name: String,
    /// The signed `.efi`.
    pub efi: Vec<u8>,
    /// Its entry `.conf` text.
    pub conf: String,
}

/// The written ISO or container archive.
#[derive(Clone, Debug, Serialize)]
pub struct Artifact {
    /// Its path.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// SHA-256 of the file.
    pub sha256: String,
    /// For ISOs: the systemd-boot used and its version.
    pub sdboot: Option<String>,
    /// For ISOs: the `secure-boot-enroll` value written.
    pub secure_boot_enroll: Option<String>,
}

/// Media output failed.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// No systemd-boot.
    #[error("no systemd-boot for the ISO: looked at {0} and {BUILTIN_SDBOOT}; install systemd-boot-efi in the image or give --sdboot FILE")]
    NoSdboot(String),
    /// systemd-boot could not be signed.
    #[error("signing systemd-boot {path}: {source}")]
    SignSdboot {
        /// The file.
        path: String,
        /// Why.
        source: AuthenticodeError,
    },
    /// loader.conf setting.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// FAT image.
    #[error(transparent)]
    Fat(#[from] crate::media::fat::FatError),
    /// xorriso.
    #[error(transparent)]
    Iso(#[from] IsoError),
    /// The container archive.
    #[error(transparent)]
    Container(#[from] crate::media::container::ContainerError),
    /// The overlay directory.
    #[error("--overlay-iso {0}: not a directory")]
    Overlay(String),
    /// Temporary files.
    #[error("writing into {path}: {source}")]
    Io {
        /// Where.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MediaError + '_ {
    move |source| MediaError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn artifact(
    path: PathBuf,
    bytes_sha: (u64, String),
    sdboot: Option<String>,
    enroll: Option<String>,
) -> Artifact {
    Artifact {
        path,
        size: bytes_sha.0,
        sha256: bytes_sha.1,
        sdboot,
        secure_boot_enroll: enroll,
    }
}

fn file_digest(path: &Path) -> Result<(u64, String), MediaError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    Ok((
        bytes.len() as u64,
        hex::encode(sha2::Sha256::digest(&bytes)),
    ))
}

/// systemd-boot: `--sdboot`, else the OS's, else the build image's.
/// Returns how it is shown and where it is read.
fn choose_sdboot(
    opts: &BuildUkiOptions,
    boot: Option<&BootFiles>,
) -> Result<(String, PathBuf), MediaError> {
    if let Some(p) = &opts.sdboot {
        return Ok((p.display().to_string(), p.clone()));
    }
    if let Some(f) = boot.and_then(|b| b.sdboot.as_ref()) {
        return Ok((f.shown.clone(), f.path.clone()));
    }
    let builtin = PathBuf::from(BUILTIN_SDBOOT);
    if builtin.is_file() {
        return Ok((BUILTIN_SDBOOT.to_string(), builtin));
    }
    Err(MediaError::NoSdboot(boot.map_or_else(
        || "<no rootfs>".into(),
        |b| format!("{}/{SDBOOT_PATH}", b.origin),
    )))
}

/// Stages `<name>.iso` (committed with the other outputs by the caller).
pub fn write_iso(
    opts: &BuildUkiOptions,
    boot: Option<&BootFiles>,
    images: &[BuiltImage],
    stage: &mut Staging,
    warnings: &mut Vec<String>,
) -> Result<Artifact, BuildUkiError> {
    let (sdboot_shown, sdboot_path) = choose_sdboot(opts, boot)?;
    let sdboot = read(&sdboot_path)?;
    let version = sdboot_version(&sdboot);
    let enroll = choose_enroll(opts.secure_boot_enroll, version.as_ref().map(|v| v.0))
        .map_err(MediaError::from)?;
    let signed_sdboot = authenticode::sign(
        &sdboot,
        opts.keys.secure_boot.as_ref(),
        &opts.keys.secure_boot_cert,
        crate::keys::DigestAlgorithm::Sha256,
    )
    .map_err(|source| MediaError::SignSdboot {
        path: sdboot_shown.clone(),
        source,
    })?;

    let mut tree = FileTree::new();
    tree.insert("EFI/BOOT/BOOTX64.EFI".into(), signed_sdboot);
    for img in images {
        tree.insert(
            format!("{}/{}.efi", EFI_DIR.trim_start_matches('/'), img.name),
            img.efi.clone(),
        );
        tree.insert(
            format!("loader/entries/{}.conf", img.name),
            img.conf.clone().into_bytes(),
        );
    }
    let default = images.first().map(|i| i.name.as_str()).unwrap_or("norole");
    tree.insert(
        "loader/loader.conf".into(),
        loader_conf(default, opts.loader_timeout, enroll).into_bytes(),
    );
    match &opts.enroll_keys {
        Some(dir) => {
            for var in ["PK", "KEK", "db"] {
                let p = dir.join(format!("{var}.auth"));
                tree.insert(format!("loader/keys/auto/{var}.auth"), read(&p)?);
            }
        }
        None => warnings.push(
            "no key directory (-k): the ISO has no loader/keys/auto/*.auth, so systemd-boot cannot enroll keys from it".into(),
        ),
    }

    // Scratch space inside the staging directory: removed with it.
    let work = stage.scratch("iso")?;
    let efiboot = work.join("efiboot.img");
    // A fixed volume id keeps the image reproducible.
    build_image(
        &tree,
        "EFIBOOT",
        0x5B4B_1D00,
        u64::from(opts.mtime),
        &efiboot,
    )
    .map_err(MediaError::from)?;
    let iso_root = match &opts.overlay_iso {
        Some(d) if d.is_dir() => d.clone(),
        Some(d) => return Err(MediaError::Overlay(d.display().to_string()).into()),
        None => {
            let empty = work.join("iso-root");
            std::fs::create_dir(&empty)
                .map_err(io_err(&empty))
                .map_err(BuildUkiError::from)?;
            // xorriso records the root directory's own mtime; pin it for reproducible ISOs.
            let stamp =
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(opts.mtime));
            std::fs::File::open(&empty)
                .and_then(|d| d.set_modified(stamp))
                .map_err(io_err(&empty))
                .map_err(BuildUkiError::from)?;
            empty
        }
    };
    let tmp_iso = work.join("out.iso");
    xorriso_iso(
        &efiboot,
        &iso_root,
        &tmp_iso,
        VOLUME_LABEL,
        u64::from(opts.mtime),
    )
    .map_err(MediaError::from)?;
    let name = format!("{default}.iso");
    let digest = file_digest(&tmp_iso)?;
    stage.adopt(&name, &tmp_iso)?;
    Ok(artifact(
        stage.target(&name),
        digest,
        Some(format!(
            "{} ({})",
            sdboot_shown,
            version
                .map(|v| v.1)
                .unwrap_or_else(|| "version unknown".into())
        )),
        Some(enroll.word().into()),
    ))
}

/// Stages `<name>.tar`, a `docker load`-able image of the ESP files.
pub fn write_container(
    opts: &BuildUkiOptions,
    images: &[BuiltImage],
    stage: &mut Staging,
) -> Result<Artifact, BuildUkiError> {
    let mut tree = FileTree::new();
    for img in images {
        tree.insert(
            format!("{}/{}.efi", EFI_DIR.trim_start_matches('/'), img.name),
            img.efi.clone(),
        );
        tree.insert(
            format!("loader/entries/{}.conf", img.name),
            img.conf.clone().into_bytes(),
        );
    }
    let default = images.first().map(|i| i.name.as_str()).unwrap_or("norole");
    let mut bytes = Vec::new();
    crate::media::container::write_docker_archive(
        &tree,
        &opts.container_tag,
        u64::from(opts.mtime),
        &mut bytes,
    )
    .map_err(MediaError::from)?;
    let name = format!("{default}.tar");
    stage.write(&name, &bytes)?;
    Ok(artifact(
        stage.target(&name),
        (
            bytes.len() as u64,
            hex::encode(sha2::Sha256::digest(&bytes)),
        ),
        None,
        None,
    ))
}

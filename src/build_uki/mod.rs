//! The `build-uki` command: a root filesystem (or a kernel, initrd and
//! os-release) into signed Unified Kernel Images with a signed PCR 11 policy,
//! plus their boot-entry files.
//!
//! The story, as one transaction: check every name; find the kernel, stub
//! and os-release ([`BootFiles`], alike for a directory and an image); build
//! the initrd once; for each entry assemble the UKI, predict and sign PCR 11
//! and sign the image, in memory; stage every output (`.efi` and `.conf`, or
//! the ISO or container archive) in a private directory inside `-d` and
//! rename them into place together ([`stage`]). An error at any step leaves
//! nothing of the run in `-d`.

pub mod artifacts;
pub mod inspect;
pub mod stage;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::initrd::{build_initrd, Compression, InitrdOptions, InitrdStats};
use crate::keys::DigestAlgorithm;
use crate::names;
use crate::progress::{Progress, Unit};
use crate::rootfs::boot_files::BootFiles;
use crate::rootfs::discover::{self, KERNEL_PLACES, STUB_PATH};
use crate::rootfs::Source;
use crate::store::signing::SigningKeys;
use crate::uki::assemble::{self, PcrPolicy, UkiPayload};
use crate::uki::entries::{entry_conf, plan_entries, CmdlinePlan, Entry};
use crate::uki::kernel::{check_kernel, kernel_release};
use crate::uki::pcr::PhasePath;
use crate::uki::stub;
use stage::Staging;

/// The command line of an entry when none is given: a serial and a VGA console.
/// `rdinit=` is added when the rootfs has no `/init` (the kernel runs `/init`
/// from an initramfs, and a container image rarely has one).
pub const DEFAULT_CMDLINE: &str = "console=tty1 console=ttyS0";

/// Where the build image keeps its fallback stub and systemd-boot.
pub const BUILTIN_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

/// Output artifact kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputType {
    /// Signed `.efi` files and entry `.conf` files.
    Uki,
    /// A bootable ISO (later).
    Iso,
    /// A `docker save` upgrade image (later).
    Container,
}

/// What the user asked for.
pub struct BuildUkiOptions {
    /// The rootfs, when building from one.
    pub source: Option<Source>,
    /// `--kernel`.
    pub kernel: Option<PathBuf>,
    /// `--initrd`: use this initrd instead of packing the rootfs.
    pub initrd: Option<PathBuf>,
    /// `--os-release`.
    pub os_release: Option<PathBuf>,
    /// `--stub`.
    pub stub: Option<PathBuf>,
    /// `--overlay-rootfs`.
    pub overlay_rootfs: Option<PathBuf>,
    /// `--splash`.
    pub splash: Option<PathBuf>,
    /// `--dtb`.
    pub dtb: Option<PathBuf>,
    /// `--cmdline`: replaces the default command line.
    pub cmdline: Option<String>,
    /// Entry plan flags (`--extend-cmdline`, `--extra-cmdline`, `--single-efi-cmdline`).
    pub extend_cmdline: Option<String>,
    /// `--extra-cmdline`.
    pub extra_cmdline: Vec<String>,
    /// `--single-efi-cmdline`.
    pub single_efi_cmdline: Vec<String>,
    /// `-n`: main entry name.
    pub name: String,
    /// `--boot-branding`: entry title.
    pub boot_branding: Option<String>,
    /// Write `version` into entries.
    pub include_version_in_config: bool,
    /// Write `cmdline` into entries.
    pub include_cmdline_in_config: bool,
    /// `-d`.
    pub output_dir: PathBuf,
    /// `-t`.
    pub output_type: OutputType,
    /// The keys.
    pub keys: SigningKeys,
    /// Initrd compression.
    pub compression: Compression,
    /// Banks to predict.
    pub pcr_banks: Vec<DigestAlgorithm>,
    /// Banks to sign.
    pub signed_banks: Vec<DigestAlgorithm>,
    /// Phase paths to sign (`--phases`); empty: chosen from the rootfs's boot
    /// model (see [`choose_phases`]).
    pub phases: Vec<PhasePath>,
    /// Warn above this UKI size.
    pub size_warning_bytes: u64,
    /// Fixed mtime for the initrd (`SOURCE_DATE_EPOCH`).
    pub mtime: u32,
    /// `--sdboot`: systemd-boot for the ISO.
    pub sdboot: Option<PathBuf>,
    /// `--secure-boot-enroll` for loader.conf.
    pub secure_boot_enroll: Option<crate::media::loader::SecureBootEnroll>,
    /// `--loader-timeout`: menu timeout in seconds.
    pub loader_timeout: u32,
    /// `--overlay-iso`: files added to the ISO.
    pub overlay_iso: Option<PathBuf>,
    /// Key directory whose `.auth` files go to `loader/keys/auto/` on the ISO.
    pub enroll_keys: Option<PathBuf>,
    /// Tag of the `-t container` image.
    pub container_tag: String,
}

/// build-uki failed; no `.efi` or `.conf` of this run was left behind.
#[derive(Debug, thiserror::Error)]
pub enum BuildUkiError {
    /// An input is missing.
    #[error("{0}")]
    Missing(String),
    /// An input cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not supported yet.
    #[error("{0}")]
    Unsupported(String),
    /// A flag value is wrong.
    #[error(transparent)]
    Entry(#[from] crate::uki::entries::BadSingleEntry),
    /// The kernel is unusable.
    #[error(transparent)]
    Kernel(#[from] crate::uki::kernel::KernelError),
    /// The stub is unusable.
    #[error("stub {path}: {source}")]
    Stub {
        /// The stub.
        path: String,
        /// Why.
        source: stub::StubError,
    },
    /// The initrd failed.
    #[error(transparent)]
    Initrd(#[from] crate::initrd::InitrdError),
    /// Assembly or signing failed.
    #[error(transparent)]
    Assemble(#[from] assemble::AssembleError),
    /// Writing the ISO or container failed.
    #[error(transparent)]
    Media(#[from] artifacts::MediaError),
    /// Reading, verifying or flattening a container image failed.
    #[error(transparent)]
    Image(#[from] crate::rootfs::ImageError),
    /// Two entries of one build would get the same name (and file).
    #[error("two entries are both called {0:?}; give --single-efi-cmdline titles that stay distinct after lower-casing and turning punctuation into _, and differ from the -n name's _extraN entries")]
    DuplicateEntry(String),
    /// A name or value that would become a path or a loader-entry line is unsafe.
    #[error(transparent)]
    Name(#[from] names::BadName),
    /// Staging or committing the outputs failed.
    #[error(transparent)]
    Stage(#[from] stage::StageError),
}

/// One built UKI.
#[derive(Clone, Debug, Serialize)]
pub struct BuiltEntry {
    /// The entry.
    pub entry: Entry,
    /// The `.efi` file.
    pub efi: PathBuf,
    /// The `.conf` file.
    pub conf: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the file.
    pub sha256: String,
    /// Predicted PCR 11 per bank for the empty phase path (what the initrd sees first), hex.
    pub pcr11: Vec<(String, String)>,
}

/// The packed initrd.
#[derive(Clone, Debug, Serialize)]
pub struct InitrdSummary {
    /// Archive entries.
    pub entries: u64,
    /// cpio bytes before compression.
    pub uncompressed_bytes: u64,
    /// Bytes after compression.
    pub compressed_bytes: u64,
    /// The compression used.
    pub compression: String,
}

impl InitrdSummary {
    fn new(s: &InitrdStats, c: Compression) -> Self {
        InitrdSummary {
            entries: s.entries,
            uncompressed_bytes: s.uncompressed_bytes,
            compressed_bytes: s.compressed_bytes,
            compression: c.name().to_string(),
        }
    }
}

/// What build-uki did.
#[derive(Clone, Debug, Serialize)]
pub struct BuildUkiReport {
    /// The container image built from: source, manifest and config digests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The kernel used.
    pub kernel: String,
    /// Its release.
    pub uname: Option<String>,
    /// The stub used.
    pub stub: String,
    /// The stub's systemd version.
    pub stub_version: Option<String>,
    /// The sections that stub measures, and how that was found.
    pub measured_sections: Vec<String>,
    /// `stub-table` or `version-table`.
    pub measured_source: String,
    /// Initrd statistics (none with `--initrd`).
    pub initrd: Option<InitrdSummary>,
    /// The UKIs.
    pub entries: Vec<BuiltEntry>,
    /// The ISO or container archive, for `-t iso` and `-t container`.
    pub artifact: Option<artifacts::Artifact>,
    /// The phase paths signed into `.pcrsig`, and why those.
    pub phases: SignedPhases,
    /// Notes and warnings.
    pub warnings: Vec<String>,
}

/// The phase paths a build signed, and the reason.
#[derive(Clone, Debug, Serialize)]
pub struct SignedPhases {
    /// The paths, `:`-joined (`enter-initrd:leave-initrd`, `sysinit`, …).
    pub paths: Vec<String>,
    /// Why these.
    pub reason: String,
}

/// Host-mode phase paths: systemd booted without `/etc/initrd-release` runs as
/// the real system from the first instruction, so `systemd-pcrphase` measures
/// only `sysinit` and then `ready` — never `enter-initrd` or `leave-initrd`.
/// The empty path is signed too: crypttab volumes are attached before
/// `sysinit.target`, and `sysinit` is measured only after it, so at that
/// point PCR 11 holds the UKI's sections alone. (In this model everything
/// that runs before `sysinit` is the signed UKI itself, so the empty path
/// opens nothing to code from outside it; `sysinit:ready:shutdown` and later
/// stay unsigned, so volumes lock again at shutdown.)
pub fn host_phase_paths() -> Vec<PhasePath> {
    let mut paths = vec![PhasePath::empty()];
    paths.extend(
        ["sysinit", "sysinit:ready"]
            .iter()
            .filter_map(|p| PhasePath::parse(p).ok()),
    );
    paths
}

/// The phase paths to sign: `--phases` when given; else what the booted
/// rootfs will measure — ukify's initrd set when it has `/etc/initrd-release`
/// (systemd in initrd mode), the host set when it does not (the whole OS in the
/// initrd, the Kairos model). A volume enrolled with a signed policy unlocks
/// only in a phase that was signed, so guessing wrong locks the disk.
pub fn choose_phases(
    given: &[PhasePath],
    boot: Option<&BootFiles>,
    warnings: &mut Vec<String>,
) -> (Vec<PhasePath>, String) {
    if !given.is_empty() {
        return (given.to_vec(), "--phases".into());
    }
    let Some(traits) = boot.map(|b| &b.trusted_boot) else {
        return (
            crate::uki::pcr::default_phase_paths(),
            "no rootfs to look at (--initrd): ukify's default initrd phases".into(),
        );
    };
    if traits.systemd && !(traits.cryptsetup && traits.tss2) {
        let mut missing = Vec::new();
        if !traits.cryptsetup {
            missing.push("systemd-cryptsetup (Debian: systemd-cryptsetup or cryptsetup)");
        }
        if !traits.tss2 {
            missing.push(
                "the TPM2 libraries (Debian: libtss2-esys-3.0.2-0, libtss2-rc0, libtss2-mu0)",
            );
        }
        warnings.push(format!(
            "this rootfs cannot unlock a volume sealed to the signed PCR policy: it lacks {}; add them to the image if its disks are to unlock with the TPM",
            missing.join(" and ")
        ));
    }
    if traits.initrd_release {
        (
            crate::uki::pcr::default_phase_paths(),
            "the rootfs has /etc/initrd-release: systemd runs in initrd mode and measures enter-initrd, leave-initrd, sysinit, ready".into(),
        )
    } else {
        (
            host_phase_paths(),
            "the rootfs has no /etc/initrd-release: systemd runs the whole OS from the initrd in host mode; crypttab volumes attach before anything is measured (the empty path), then it measures sysinit and ready".into(),
        )
    }
}

fn read(path: &Path) -> Result<Vec<u8>, BuildUkiError> {
    std::fs::read(path).map_err(|source| BuildUkiError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The kernel to use: `--kernel`, else the newest of the OS. Returns how it
/// is shown and where it is read.
fn choose_kernel(
    opts: &BuildUkiOptions,
    boot: Option<&BootFiles>,
    warnings: &mut Vec<String>,
) -> Result<(String, PathBuf), BuildUkiError> {
    if let Some(k) = &opts.kernel {
        return Ok((k.display().to_string(), k.clone()));
    }
    let boot = boot.ok_or_else(|| {
        BuildUkiError::Missing("no kernel: give --kernel FILE or a rootfs source".into())
    })?;
    let first = boot.kernels.first().ok_or_else(|| {
        BuildUkiError::Missing(format!(
            "no kernel in {}: looked at {KERNEL_PLACES}; install a kernel in the image or give --kernel FILE",
            boot.origin
        ))
    })?;
    if boot.kernels.len() > 1 {
        warnings.push(format!(
            "several kernels found ({}); using the newest, {} (choose with --kernel)",
            boot.kernels
                .iter()
                .map(|k| k.version.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            first.file.shown
        ));
    }
    Ok((first.file.shown.clone(), first.file.path.clone()))
}

/// The stub: `--stub`, else the OS's, else the build image's.
fn choose_stub(
    opts: &BuildUkiOptions,
    boot: Option<&BootFiles>,
) -> Result<(String, PathBuf), BuildUkiError> {
    if let Some(s) = &opts.stub {
        return Ok((s.display().to_string(), s.clone()));
    }
    if let Some(f) = boot.and_then(|b| b.stub.as_ref()) {
        return Ok((f.shown.clone(), f.path.clone()));
    }
    let builtin = PathBuf::from(BUILTIN_STUB);
    if builtin.is_file() {
        return Ok((BUILTIN_STUB.to_string(), builtin));
    }
    Err(BuildUkiError::Missing(format!(
        "no systemd-stub: looked at {}/{STUB_PATH} and {BUILTIN_STUB}; install systemd-boot-efi in the image or give --stub FILE",
        boot.map_or("<no rootfs>", |b| b.origin.as_str())
    )))
}

/// Checks every name and value that becomes a file name or a loader-entry
/// line before anything is read or written (see [`names`]).
fn check_flags(opts: &BuildUkiOptions) -> Result<(), BuildUkiError> {
    names::file_stem("-n", &opts.name)?;
    if let Some(b) = &opts.boot_branding {
        names::config_line("--boot-branding", b)?;
    }
    let mut cmdlines: Vec<(&str, &str)> = Vec::new();
    if let Some(c) = &opts.cmdline {
        cmdlines.push(("--cmdline", c));
    }
    if let Some(c) = &opts.extend_cmdline {
        cmdlines.push(("--extend-cmdline", c));
    }
    cmdlines.extend(
        opts.extra_cmdline
            .iter()
            .map(|c| ("--extra-cmdline", c.as_str())),
    );
    cmdlines.extend(
        opts.single_efi_cmdline
            .iter()
            .map(|c| ("--single-efi-cmdline", c.as_str())),
    );
    for (what, value) in cmdlines {
        // The length warning is given once per entry, on the whole line.
        names::cmdline(what, value)?;
    }
    Ok(())
}

/// Checks the planned entries as a whole: names that make files, titles and
/// command lines that make loader-entry lines, no two entries with one name.
fn check_entries(entries: &[Entry], warnings: &mut Vec<String>) -> Result<(), BuildUkiError> {
    let mut seen = std::collections::BTreeSet::new();
    for e in entries {
        names::file_stem("entry name", &e.name)?;
        names::config_line(&format!("title of entry {}", e.name), &e.title)?;
        if let Some(w) =
            names::cmdline(&format!("the command line of entry {}", e.name), &e.cmdline)?
        {
            warnings.push(w);
        }
        if !seen.insert(e.name.as_str()) {
            return Err(BuildUkiError::DuplicateEntry(e.name.clone()));
        }
    }
    Ok(())
}

/// Runs build-uki: inputs → initrd → each entry assembled and signed in
/// memory → every output staged and renamed into `-d` together. On any error
/// nothing of this run is left in `-d`.
pub fn run(
    opts: &BuildUkiOptions,
    progress: &dyn Progress,
) -> Result<BuildUkiReport, BuildUkiError> {
    let mut warnings = Vec::new();
    check_flags(opts)?;

    // The output directory is locked, cleared of what an interrupted run
    // left (finished or removed) and given a staging area first, before
    // anything long; nothing of this run is visible in it until the commit.
    let mut stage = Staging::new(&opts.output_dir)?;
    warnings.extend(stage.recovered().iter().cloned());

    // Inputs. A container image is flattened first: its initrd streams out
    // of the layers, and its boot files are kept aside (see rootfs::image).
    let initrd_opts = InitrdOptions {
        compression: opts.compression,
        mtime: opts.mtime,
        ..InitrdOptions::default()
    };
    let image = match &opts.source {
        Some(Source::Image(src)) => Some(crate::rootfs::image::prepare(
            src,
            opts.overlay_rootfs.as_deref(),
            &initrd_opts,
            progress,
        )?),
        _ => None,
    };
    let boot: Option<BootFiles> = match (&opts.source, &image) {
        (_, Some(img)) => Some(img.boot.clone()),
        (Some(Source::Dir(d)), None) => Some(BootFiles::from_dir(d)),
        _ => None,
    };
    let root = opts.source.as_ref().and_then(Source::dir);
    if let Some(img) = &image {
        warnings.extend(img.notes.iter().cloned());
    }

    let (kernel_shown, kernel_path) = choose_kernel(opts, boot.as_ref(), &mut warnings)?;
    let linux = read(&kernel_path)?;
    check_kernel(&linux, &kernel_shown)?;
    let uname = kernel_release(&linux);

    let (stub_shown, stub_path) = choose_stub(opts, boot.as_ref())?;
    let stub_bytes = read(&stub_path)?;
    let stub_err = |source| BuildUkiError::Stub {
        path: stub_shown.clone(),
        source,
    };
    let stub_info = stub::inspect(&stub_bytes).map_err(stub_err)?;
    if stub_info.signed {
        return Err(BuildUkiError::Stub {
            path: stub_shown.clone(),
            source: stub::StubError::MeasuredSetUnknown(
                "it is already signed; use an unsigned systemd-stub from systemd-boot-efi".into(),
            ),
        });
    }
    let measured = stub_info.measured().map_err(stub_err)?.clone();
    warnings.extend(stub_info.notes.iter().cloned());

    let osrel = match (&opts.os_release, &boot) {
        (Some(p), _) => read(p)?,
        (None, Some(b)) => match &b.os_release {
            Some(f) => read(&f.path)?,
            None => {
                return Err(BuildUkiError::Missing(format!(
                    "no os-release in {}: looked at /etc/os-release and /usr/lib/os-release; add one or give --os-release FILE",
                    b.origin
                )))
            }
        },
        (None, None) => return Err(BuildUkiError::Missing("no os-release: give --os-release FILE or a rootfs source".into())),
    };
    let osrel_text = String::from_utf8_lossy(&osrel).into_owned();

    // The initrd is built once for every entry.
    let (initrd, initrd_stats) = match (&opts.initrd, &image, root) {
        (Some(p), _, _) => (read(p)?, None),
        // Streamed out of the image's layers above.
        (None, Some(img), _) => (
            read(&img.initrd)?,
            Some(InitrdSummary::new(&img.stats, opts.compression)),
        ),
        (None, None, Some(r)) => {
            let task = progress.start("initrd", Unit::Bytes, None);
            let mut buf = Vec::new();
            let stats = build_initrd(
                r,
                opts.overlay_rootfs.as_deref(),
                &mut buf,
                &initrd_opts,
                &*task,
            )?;
            task.finish();
            (buf, Some(InitrdSummary::new(&stats, opts.compression)))
        }
        (None, None, None) => {
            return Err(BuildUkiError::Missing(
                "no initrd: give --initrd FILE or a rootfs source".into(),
            ))
        }
    };

    let base = match &opts.cmdline {
        Some(c) => c.clone(),
        None => {
            let mut c = DEFAULT_CMDLINE.to_string();
            if let Some(b) = boot.as_ref().filter(|b| !b.has_init) {
                if let Some(init) = &b.init_program {
                    c.push_str(&format!(" rdinit=/{init}"));
                }
            }
            c
        }
    };
    let (title, title_from) = match &opts.boot_branding {
        Some(b) => (b.clone(), "--boot-branding"),
        None => match discover::os_release_field(&osrel_text, "PRETTY_NAME") {
            Some(t) => (t, "os-release PRETTY_NAME"),
            None => match discover::os_release_field(&osrel_text, "NAME") {
                Some(t) => (t, "os-release NAME"),
                None => ("Linux".to_string(), "the default title"),
            },
        },
    };
    names::config_line(title_from, &title)?;
    let entries = plan_entries(
        &opts.name,
        &title,
        &CmdlinePlan {
            base,
            extend: opts.extend_cmdline.clone(),
            extra: opts.extra_cmdline.clone(),
            single: opts.single_efi_cmdline.clone(),
        },
    )?;
    check_entries(&entries, &mut warnings)?;
    let version = opts
        .include_version_in_config
        .then(|| {
            discover::os_release_field(&osrel_text, "VERSION_ID")
                .or_else(|| discover::os_release_field(&osrel_text, "VERSION"))
        })
        .flatten();
    if let Some(v) = &version {
        names::config_line("os-release VERSION_ID", v)?;
    }

    let splash = opts.splash.as_deref().map(read).transpose()?;
    let dtb = opts.dtb.as_deref().map(read).transpose()?;

    let (phases, phases_reason) = choose_phases(&opts.phases, boot.as_ref(), &mut warnings);

    // Every entry is assembled and signed in memory first.
    let task = progress.start(
        "assembling and signing",
        Unit::Items,
        Some(entries.len() as u64),
    );
    let mut built = Vec::new();
    let mut images = Vec::new();
    for entry in &entries {
        task.set_message(&entry.name);
        let payload = UkiPayload {
            linux: &linux,
            initrd: &initrd,
            osrel: &osrel,
            cmdline: &entry.cmdline,
            uname: uname.as_deref(),
            splash: splash.as_deref(),
            dtb: dtb.as_deref(),
        };
        let policy = opts.keys.pcr.as_deref().map(|signer| PcrPolicy {
            signer,
            predicted_banks: opts.pcr_banks.clone(),
            signed_banks: opts.signed_banks.clone(),
            phases: phases.clone(),
        });
        let assembled =
            assemble::assemble(&stub_bytes, &payload, &measured.sections, policy.as_ref())?;
        let signed = assemble::sign(
            &assembled.image,
            opts.keys.secure_boot.as_ref(),
            &opts.keys.secure_boot_cert,
        )?;
        if signed.len() as u64 > opts.size_warning_bytes {
            warnings.push(format!(
                "{}.efi is {} MiB: some firmware fails to load images this large (warning threshold {} MiB); shrink the rootfs or use --initrd",
                entry.name,
                signed.len() >> 20,
                opts.size_warning_bytes >> 20
            ));
        }
        let conf_text = entry_conf(entry, version.as_deref(), opts.include_cmdline_in_config);
        let (efi, conf) = match opts.output_type {
            OutputType::Uki => (
                stage.target(&format!("{}.efi", entry.name)),
                stage.target(&format!("{}.conf", entry.name)),
            ),
            // Inside the media: the ESP paths.
            _ => (
                PathBuf::from(format!(
                    "{}/{}.efi",
                    crate::uki::entries::EFI_DIR,
                    entry.name
                )),
                PathBuf::from(format!("/loader/entries/{}.conf", entry.name)),
            ),
        };
        let pcr11 = assembled
            .prediction
            .as_ref()
            .map(|p| {
                opts.pcr_banks
                    .iter()
                    .filter_map(|b| {
                        p.value(*b, &PhasePath::empty())
                            .map(|v| (b.name().to_string(), hex::encode(v)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        use sha2::Digest;
        let sha256 = hex::encode(sha2::Sha256::digest(&signed));
        let size = signed.len() as u64;
        images.push(artifacts::BuiltImage {
            name: entry.name.clone(),
            efi: signed,
            conf: conf_text,
        });
        built.push(BuiltEntry {
            entry: entry.clone(),
            efi,
            conf,
            size,
            sha256,
            pcr11,
        });
        task.advance(1);
    }
    task.finish();

    // Then every output is staged, and all are renamed into place together.
    let artifact = match opts.output_type {
        OutputType::Uki => {
            for img in &images {
                stage.write(&format!("{}.efi", img.name), &img.efi)?;
                stage.write(&format!("{}.conf", img.name), img.conf.as_bytes())?;
            }
            None
        }
        OutputType::Iso => Some(artifacts::write_iso(
            opts,
            boot.as_ref(),
            &images,
            &mut stage,
            &mut warnings,
        )?),
        OutputType::Container => Some(artifacts::write_container(opts, &images, &mut stage)?),
    };
    stage.commit()?;
    if opts.keys.pcr.is_none() {
        warnings.push("no PCR key: the UKIs carry no .pcrsig/.pcrpkey, so disks cannot be bound to a signed PCR 11 policy (give -k with tpm2-pcr-private.pem or --tpm-pcr-private-key)".into());
    }
    Ok(BuildUkiReport {
        image: image.as_ref().map(|i| i.description.clone()),
        kernel: kernel_shown,
        uname,
        stub: stub_shown,
        stub_version: stub_info.version.as_ref().map(|v| v.full.clone()),
        measured_sections: measured.sections.clone(),
        measured_source: serde_json::to_value(measured.source)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        initrd: initrd_stats,
        entries: built,
        artifact,
        phases: SignedPhases {
            paths: phases.iter().map(|p| p.words().join(":")).collect(),
            reason: phases_reason,
        },
        warnings,
    })
}

/// The human summary.
pub fn render_summary(r: &BuildUkiReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    if let Some(image) = &r.image {
        let _ = writeln!(s, "image   {image}");
    }
    let _ = writeln!(
        s,
        "kernel  {} ({})",
        r.kernel,
        r.uname.as_deref().unwrap_or("release unknown")
    );
    let _ = writeln!(
        s,
        "stub    {} (systemd {}; measures {} [{}])",
        r.stub,
        r.stub_version.as_deref().unwrap_or("?"),
        r.measured_sections.join(" "),
        r.measured_source
    );
    if let Some(i) = &r.initrd {
        let _ = writeln!(
            s,
            "initrd  {} entries, {} MiB packed into {} MiB",
            i.entries,
            i.uncompressed_bytes >> 20,
            i.compressed_bytes >> 20
        );
    }
    if let Some(a) = &r.artifact {
        let _ = writeln!(
            s,
            "wrote   {} ({} MiB, sha256 {})",
            a.path.display(),
            a.size >> 20,
            a.sha256
        );
    }
    let _ = writeln!(
        s,
        "phases  {} ({})",
        r.phases
            .paths
            .iter()
            // The empty path is a real entry; shown so that it is seen.
            .map(|p| if p.is_empty() {
                "\"\" (before any phase)"
            } else {
                p.as_str()
            })
            .collect::<Vec<_>>()
            .join(", "),
        r.phases.reason
    );
    for e in &r.entries {
        let _ = writeln!(
            s,
            "built   {} ({} MiB, sha256 {})",
            e.efi.display(),
            e.size >> 20,
            e.sha256
        );
        let _ = writeln!(s, "        cmdline: {}", e.entry.cmdline);
        for (bank, v) in &e.pcr11 {
            let _ = writeln!(s, "        PCR 11 {bank}: {v}");
        }
    }
    s
}

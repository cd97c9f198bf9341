//! What of the host's environment reaches a tool's container, and the files
//! that environment names.
//!
//! Passed: the non-secret settings the tools read (`SOURCE_DATE_EPOCH`,
//! registry and QEMU settings), the secrets the user handed to sbkit by
//! setting sbkit's own variables (`SBKIT_PKCS11_PIN`, `SBKIT_KEY_PASSPHRASE`),
//! and every variable an argument names as `env:VAR`. Nothing else of the
//! host's environment: a container sees no stray credentials.
//!
//! Variables that name a file (`SBKIT_PKCS11_PIN_FILE`, `SBKIT_KEY_PASSPHRASE_FILE`,
//! `SBKIT_PKCS11_MODULE`) are mounted read-only and rewritten to where the
//! file is in the container; `module-path=` in a key URI is mounted at its
//! own path (the URI itself is passed as typed). A module below the system
//! library directories (`/usr`, `/lib`) is not mounted: the image's own
//! module at that path is used (a host library would not load against the
//! image's libraries anyway).

use std::path::{Path, PathBuf};

use super::paths::{absolute, container_path, MarkedValue, Mount};
use crate::cli::path_arg::PathKind;

/// Settings passed as they are, when set.
const PLAIN: [&str; 7] = [
    "SOURCE_DATE_EPOCH",
    "SBKIT_QEMU_ACCEL",
    crate::rootfs::registry::AUTH_HOSTS_ENV,
    crate::token::pin::PIN_ENV,
    crate::store::hardened::PASSPHRASE_ENV,
    crate::token::ALLOW_FINAL_TRY_ENV,
    crate::token::PIN_EVERY_SIGNATURE_ENV,
];

/// Settings that name a file the tool reads: mounted read-only, the value
/// rewritten to where the file is in the container.
const FILES: [&str; 3] = [
    crate::token::pin::PIN_FILE_ENV,
    crate::store::hardened::PASSPHRASE_FILE_ENV,
    crate::token::module::MODULE_ENV,
];

/// The environment and extra mounts of a container.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Passthrough {
    /// `KEY=value` pairs.
    pub env: Vec<String>,
    /// Read-only mounts of the files those settings and key URIs name.
    pub mounts: Vec<Mount>,
}

/// Whether `name` can be an environment variable's name (what `env:` may name).
fn is_var_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The mount that makes host file `host` readable in the container, unless
/// it lies under the image's system directories (then the image's own file
/// at that path is meant) or does not exist.
fn file_mount(host: &Path) -> Option<Mount> {
    let inside = container_path(host);
    (inside == host && host.is_file()).then(|| Mount {
        host: host.to_path_buf(),
        container: inside,
        read_only: true,
    })
}

/// What reaches the container of a run whose path-marked arguments are
/// `values`, from a host environment read through `var`, with relative
/// paths resolved against `cwd`.
pub fn plan(
    values: &[MarkedValue],
    var: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Passthrough {
    let mut out = Passthrough::default();
    let mut names: Vec<String> = PLAIN.iter().map(|s| s.to_string()).collect();
    // The variables the arguments name: the user chose to hand these over.
    for v in values.iter().filter(|v| v.kind == PathKind::Secret) {
        if let Some(name) = v.value.strip_prefix("env:").filter(|n| is_var_name(n)) {
            if !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
    }
    for name in &names {
        if let Some(value) = var(name) {
            out.env.push(format!("{name}={value}"));
        }
    }
    let mut modules: Vec<PathBuf> = Vec::new();
    for name in FILES {
        let Some(value) = var(name).filter(|v| !v.is_empty()) else {
            continue;
        };
        let host = absolute(Path::new(&value), cwd);
        let inside = container_path(&host);
        let system_library = ["/usr", "/lib", "/lib64"]
            .iter()
            .any(|d| host.starts_with(d));
        if name == crate::token::module::MODULE_ENV && system_library {
            // The image's own module at that path (a host library would not
            // load against the image's libraries anyway).
            out.env.push(format!("{name}={value}"));
        } else if !host.is_file() {
            // Not mounted (the engine would make a directory of it): the tool
            // says it is missing, by the name the user gave.
            out.env.push(format!("{name}={value}"));
        } else {
            out.env.push(format!("{name}={}", inside.display()));
            out.mounts.push(Mount {
                host: host.clone(),
                container: inside,
                read_only: true,
            });
        }
    }
    for v in values.iter().filter(|v| v.kind == PathKind::Key) {
        if let Ok(uri) = crate::token::Pkcs11Uri::parse(&v.value) {
            if let Some(p) = uri.module_path {
                modules.push(p);
            }
        }
    }
    for m in modules.iter().filter_map(|p| file_mount(p)) {
        if !out.mounts.contains(&m) {
            out.mounts.push(m);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(kind: PathKind, value: &str) -> MarkedValue {
        MarkedValue {
            token: 0,
            arg: "x".into(),
            kind,
            value: value.into(),
            is_path: false,
        }
    }

    #[test]
    fn named_variables_and_sbkit_settings_pass_and_nothing_else() {
        let t = tempfile::tempdir().unwrap();
        let host = |name: &str| match name {
            "BACKUP_PASS" => Some("s3cret".to_string()),
            "SBKIT_PKCS11_PIN" => Some("123456".to_string()),
            "SOURCE_DATE_EPOCH" => Some("1".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("never".to_string()),
            _ => None,
        };
        let p = plan(
            &[
                value(PathKind::Secret, "env:BACKUP_PASS"),
                value(PathKind::Secret, "env:bad name"),
                value(PathKind::Secret, "file:pw.txt"),
            ],
            &host,
            t.path(),
        );
        assert_eq!(
            p.env,
            [
                "SOURCE_DATE_EPOCH=1",
                "SBKIT_PKCS11_PIN=123456",
                "BACKUP_PASS=s3cret"
            ]
        );
        assert!(p.mounts.is_empty());
    }

    #[test]
    fn files_named_by_settings_and_uris_are_mounted_read_only() {
        let t = tempfile::tempdir().unwrap();
        // The tempdir is under /tmp, which the container keeps for itself:
        // a PIN file there moves below /host. A module under /usr/lib is
        // the image's own: passed as named, not mounted.
        let pin = t.path().join("pin");
        std::fs::write(&pin, "1234").unwrap();
        let host = |name: &str| match name {
            "SBKIT_PKCS11_PIN_FILE" => Some("pin".to_string()),
            "SBKIT_PKCS11_MODULE" => Some("/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so".to_string()),
            _ => None,
        };
        let p = plan(&[], &host, t.path());
        let inside = container_path(&pin);
        assert_eq!(
            p.env,
            [
                format!("SBKIT_PKCS11_PIN_FILE={}", inside.display()),
                "SBKIT_PKCS11_MODULE=/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so".to_string()
            ]
        );
        assert_eq!(
            p.mounts,
            [Mount {
                host: pin,
                container: inside,
                read_only: true
            }]
        );

        // A module elsewhere, named by the setting, is mounted and the
        // setting rewritten like any file.
        let module_in_tmp = t.path().join("libother-pkcs11.so");
        std::fs::write(&module_in_tmp, b"").unwrap();
        let named = module_in_tmp.display().to_string();
        let host = |name: &str| (name == "SBKIT_PKCS11_MODULE").then(|| named.clone());
        let p = plan(&[], &host, t.path());
        let inside = container_path(&module_in_tmp);
        assert_ne!(inside, module_in_tmp);
        assert_eq!(p.env, [format!("SBKIT_PKCS11_MODULE={}", inside.display())]);
        assert_eq!(
            p.mounts,
            [Mount {
                host: module_in_tmp,
                container: inside,
                read_only: true
            }]
        );

        // A module outside the system directories, named by a key URI, is
        // mounted at its own path.
        let vendor = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let module = vendor.path().join("libvendor-pkcs11.so");
        std::fs::write(&module, b"").unwrap();
        let uri = format!("pkcs11:token=a?module-path={}", module.display());
        let p = plan(&[value(PathKind::Key, &uri)], &|_: &str| None, t.path());
        assert!(p.env.is_empty());
        assert_eq!(
            p.mounts,
            [Mount {
                host: module.clone(),
                container: module,
                read_only: true
            }]
        );
    }
}

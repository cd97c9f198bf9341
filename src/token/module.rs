//! Choosing and loading the PKCS#11 module (the `.so` that talks to the token).
//!
//! Order: the URI's `module-path`, its `module-name`, `SBKIT_PKCS11_MODULE`,
//! then OpenSC's `opensc-pkcs11.so` in the usual places. A module is loaded
//! and `C_Initialize`d once per process and shared, because a second
//! `C_Initialize` fails and a `C_Finalize` would pull the module from under
//! every other signer using it (a UKI build may sign with two token keys).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};

use super::uri::Pkcs11Uri;

/// Environment variable naming the PKCS#11 module to load.
pub const MODULE_ENV: &str = "SBKIT_PKCS11_MODULE";

/// Where OpenSC's module lives on common distributions, Debian's first.
pub const OPENSC_CANDIDATES: &[&str] = &[
    #[cfg(target_arch = "x86_64")]
    "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so",
    #[cfg(target_arch = "aarch64")]
    "/usr/lib/aarch64-linux-gnu/opensc-pkcs11.so",
    "/usr/lib/opensc-pkcs11.so",
    "/usr/lib64/opensc-pkcs11.so",
    "/usr/lib64/pkcs11/opensc-pkcs11.so",
    "/usr/local/lib/opensc-pkcs11.so",
];

/// Directories searched for `module-name=NAME` (as `NAME.so`).
const MODULE_DIRS: &[&str] = &[
    #[cfg(target_arch = "x86_64")]
    "/usr/lib/x86_64-linux-gnu/pkcs11",
    #[cfg(target_arch = "x86_64")]
    "/usr/lib/x86_64-linux-gnu",
    #[cfg(target_arch = "aarch64")]
    "/usr/lib/aarch64-linux-gnu/pkcs11",
    #[cfg(target_arch = "aarch64")]
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib/pkcs11",
    "/usr/lib",
    "/usr/lib/softhsm",
    "/usr/lib64/pkcs11",
    "/usr/lib64",
    "/usr/local/lib",
];

/// No usable module was found or it failed to load.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// Nothing found where we looked.
    #[error("no PKCS#11 module found; tried:\n{}\nInstall OpenSC (apt install opensc-pkcs11), or name the module with ?module-path=/path/to/module.so in the URI or with {MODULE_ENV}=/path/to/module.so", tried.iter().map(|t| format!("  - {t}")).collect::<Vec<_>>().join("\n"))]
    NotFound {
        /// Each place tried, with why it did not do.
        tried: Vec<String>,
    },
    /// The file exists but is not a loadable PKCS#11 module.
    #[error("cannot load PKCS#11 module {path}: {message} (is it a PKCS#11 module for this architecture?)")]
    Load {
        /// The module.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// The module to load for `uri`, and how it was chosen.
pub fn select_module(uri: &Pkcs11Uri) -> Result<(PathBuf, &'static str), ModuleError> {
    let mut tried = Vec::new();
    if let Some(p) = &uri.module_path {
        if p.is_file() {
            return Ok((p.clone(), "module-path in the URI"));
        }
        tried.push(format!(
            "{} (module-path in the URI): not a file",
            p.display()
        ));
        // An explicit choice that does not exist must not fall back silently.
        return Err(ModuleError::NotFound { tried });
    }
    if let Some(name) = &uri.module_name {
        let file = if name.ends_with(".so") {
            name.clone()
        } else {
            format!("{name}.so")
        };
        for dir in MODULE_DIRS {
            let p = Path::new(dir).join(&file);
            if p.is_file() {
                return Ok((p, "module-name in the URI"));
            }
        }
        tried.push(format!(
            "module-name={name} in the URI: no {file} in {}",
            MODULE_DIRS.join(", ")
        ));
        return Err(ModuleError::NotFound { tried });
    }
    if let Some(p) = std::env::var_os(MODULE_ENV).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok((p, MODULE_ENV));
        }
        tried.push(format!("{} (from {MODULE_ENV}): not a file", p.display()));
        return Err(ModuleError::NotFound { tried });
    }
    for c in OPENSC_CANDIDATES {
        let p = PathBuf::from(c);
        if p.is_file() {
            return Ok((p, "OpenSC default"));
        }
        tried.push(format!("{c} (OpenSC default): not found"));
    }
    Err(ModuleError::NotFound { tried })
}

/// A loaded, initialised module.
#[derive(Clone)]
pub(crate) struct Module {
    /// The context cryptoki drives.
    pub(crate) ctx: Pkcs11,
    /// The path it was loaded from, canonical.
    pub(crate) path: PathBuf,
}

fn loaded() -> &'static Mutex<HashMap<PathBuf, Pkcs11>> {
    static LOADED: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    LOADED.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Loads and initialises `path`, or returns the copy this process already has.
pub(crate) fn load(path: &Path) -> Result<Module, ModuleError> {
    let path = std::fs::canonicalize(path).map_err(|e| ModuleError::Load {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut map = loaded().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(ctx) = map.get(&path) {
        return Ok(Module {
            ctx: ctx.clone(),
            path,
        });
    }
    let ctx = Pkcs11::new(&path).map_err(|e| ModuleError::Load {
        path: path.clone(),
        message: e.to_string(),
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Someone else in this process (e.g. an OpenSSL provider) got there first.
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(ModuleError::Load {
                path,
                message: format!("C_Initialize failed: {e}"),
            })
        }
    }
    map.insert(path.clone(), ctx.clone());
    Ok(Module { ctx, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_module_path_that_is_missing_does_not_fall_back() {
        let uri = Pkcs11Uri::parse("pkcs11:?module-path=/nonexistent/mod.so").unwrap();
        let e = select_module(&uri).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/mod.so"), "{e}");
        assert!(e.contains(MODULE_ENV), "{e}");
    }

    #[test]
    fn module_name_lists_where_it_looked() {
        let uri = Pkcs11Uri::parse("pkcs11:?module-name=no-such-module").unwrap();
        let e = select_module(&uri).unwrap_err().to_string();
        assert!(e.contains("no-such-module.so"), "{e}");
        assert!(e.contains("/usr/lib"), "{e}");
    }
}

//! The one PKCS#11 call cryptoki 0.12 does not offer: `C_Sign` on an
//! operation that is already initialised.
//!
//! A key with CKA_ALWAYS_AUTHENTICATE (YubiKey PIV slot 9c) needs
//! `C_SignInit`, then `C_Login(CKU_CONTEXT_SPECIFIC)`, then `C_Sign`.
//! cryptoki has `Session::sign_init` and `Session::login(UserType::ContextSpecific, ..)`,
//! but its `Session::sign` always calls `C_SignInit` itself (which now fails
//! with CKR_OPERATION_ACTIVE), and the multi-part `sign_update`/`sign_final`
//! are refused for CKM_RSA_PKCS and CKM_ECDSA by SoftHSM2 (single-part
//! mechanisms). cryptoki keeps its function list private, so we take the
//! module's own: `dlopen(path, RTLD_NOLOAD)` returns the copy cryptoki
//! already loaded (never a second instance), and its `C_GetInterface` /
//! `C_GetFunctionList` give the same function table cryptoki uses, so the
//! session handle is valid there. All unsafe code of the token module is here.

use std::ffi::{c_char, c_int, c_ulong, c_void, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

extern "C" {
    fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlclose(handle: *mut c_void) -> c_int;
}

const RTLD_NOW: c_int = 2;
#[cfg(target_os = "macos")]
const RTLD_NOLOAD: c_int = 0x10;
#[cfg(not(target_os = "macos"))]
const RTLD_NOLOAD: c_int = 4;

/// CK_VERSION followed by the function pointers of CK_FUNCTION_LIST, in the
/// order fixed by the PKCS#11 ABI (identical in 2.40 and 3.x up to C_Sign).
#[repr(C)]
struct FunctionListHead {
    version: [u8; 2],
    functions: [*const c_void; C_SIGN_INDEX + 1],
}

/// Position of C_Sign in CK_FUNCTION_LIST: C_Initialize is 0, … C_SignInit 42.
const C_SIGN_INDEX: usize = 43;

/// CK_INTERFACE from PKCS#11 3.0.
#[repr(C)]
struct Interface {
    name: *const c_char,
    function_list: *const c_void,
    flags: c_ulong,
}

type GetFunctionList = unsafe extern "C" fn(*mut *const FunctionListHead) -> c_ulong;
type GetInterface =
    unsafe extern "C" fn(*const c_char, *const c_void, *mut *const Interface, c_ulong) -> c_ulong;
type CSign = unsafe extern "C" fn(c_ulong, *const u8, c_ulong, *mut u8, *mut c_ulong) -> c_ulong;

const CKR_OK: c_ulong = 0;
const CKR_BUFFER_TOO_SMALL: c_ulong = 0x150;

/// A reference to an already loaded module, released on drop.
struct Library(*mut c_void);

impl Drop for Library {
    fn drop(&mut self) {
        // SAFETY: balances our dlopen; cryptoki holds its own reference, so
        // the module stays loaded.
        unsafe {
            dlclose(self.0);
        }
    }
}

/// `C_Sign` of a loaded module.
pub(crate) struct RawSign {
    _library: Library,
    c_sign: CSign,
}

// The library handle is only passed to dlclose; C_Sign is a C function the
// module made thread-safe when initialised with CKF_OS_LOCKING_OK, and the
// signer serialises its calls anyway.
unsafe impl Send for RawSign {}
unsafe impl Sync for RawSign {}

impl RawSign {
    /// Finds `C_Sign` of the module at `path`, which must already be loaded (by cryptoki).
    pub(crate) fn for_loaded_module(path: &Path) -> Result<Self, String> {
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| format!("module path {} contains a NUL byte", path.display()))?;
        // SAFETY: a libc call with a valid C string; RTLD_NOLOAD only returns
        // an already loaded library and never runs its constructors again.
        let handle = unsafe { dlopen(c_path.as_ptr(), RTLD_NOW | RTLD_NOLOAD) };
        if handle.is_null() {
            return Err(format!("{} is not loaded in this process", path.display()));
        }
        let library = Library(handle);
        // SAFETY: the handle is valid while `library` lives; the symbols, when
        // present, have the PKCS#11 signatures declared above, and the table
        // they return has at least the 2.40 layout.
        let c_sign = unsafe {
            let list = function_list(library.0)?;
            (*list).functions[C_SIGN_INDEX]
        };
        if c_sign.is_null() {
            return Err(format!("{} has no C_Sign", path.display()));
        }
        Ok(RawSign {
            _library: library,
            // SAFETY: a non-null CK_C_Sign entry of a PKCS#11 function table.
            c_sign: unsafe { std::mem::transmute::<*const c_void, CSign>(c_sign) },
        })
    }

    /// `C_Sign` on the session's active sign operation; returns the
    /// signature, or the raw CK_RV on failure.
    pub(crate) fn sign(&self, session: c_ulong, data: &[u8]) -> Result<Vec<u8>, c_ulong> {
        // Big enough for RSA-8192; CKR_BUFFER_TOO_SMALL keeps the operation
        // active and reports the size, so one more call then suffices.
        let mut out = vec![0u8; 1024];
        for _ in 0..2 {
            let mut len = out.len() as c_ulong;
            // SAFETY: `data` and `out` outlive the call and their lengths are
            // passed; `session` is a live session of this module.
            let rv = unsafe {
                (self.c_sign)(
                    session,
                    data.as_ptr(),
                    data.len() as c_ulong,
                    out.as_mut_ptr(),
                    &mut len,
                )
            };
            match rv {
                CKR_OK => {
                    out.truncate(len as usize);
                    return Ok(out);
                }
                CKR_BUFFER_TOO_SMALL if (len as usize) > out.len() => {
                    out.resize(len as usize, 0);
                }
                rv => return Err(rv),
            }
        }
        Err(CKR_BUFFER_TOO_SMALL)
    }
}

/// The function table cryptoki chose: C_GetInterface's default when it
/// gives a 3.x table, else C_GetFunctionList's.
unsafe fn function_list(handle: *mut c_void) -> Result<*const FunctionListHead, String> {
    let get_interface = dlsym(handle, c"C_GetInterface".as_ptr());
    if !get_interface.is_null() {
        let get_interface: GetInterface = std::mem::transmute(get_interface);
        let mut iface: *const Interface = std::ptr::null();
        if get_interface(std::ptr::null(), std::ptr::null(), &mut iface, 0) == CKR_OK
            && !iface.is_null()
            && !(*iface).function_list.is_null()
        {
            let list = (*iface).function_list as *const FunctionListHead;
            if (*list).version[0] >= 3 {
                return Ok(list);
            }
        }
    }
    let get_list = dlsym(handle, c"C_GetFunctionList".as_ptr());
    if get_list.is_null() {
        return Err("the module exports no C_GetFunctionList".into());
    }
    let get_list: GetFunctionList = std::mem::transmute(get_list);
    let mut list: *const FunctionListHead = std::ptr::null();
    let rv = get_list(&mut list);
    if rv != CKR_OK || list.is_null() {
        return Err(format!("C_GetFunctionList failed (rv 0x{rv:x})"));
    }
    Ok(list)
}

//! Keeping secrets in memory only: process hardening (no core dumps, not
//! ptrace-able by other users), page-locked buffers that are wiped on drop,
//! and OpenSSL's secure heap for the private key's own numbers.
//!
//! Why each piece:
//! - A core dump or a swapped-out page is a file holding the key; so core
//!   dumps are off (`RLIMIT_CORE` 0 and `PR_SET_DUMPABLE` 0, which also stops
//!   other processes of the same user from attaching with ptrace or reading
//!   `/proc/PID/mem`), and buffers are `mlock`ed so they are never swapped.
//! - OpenSSL keeps a generated key's private numbers (RSA d, p, q, …; the EC
//!   scalar) in `BN_secure_new` bignums. With the secure heap initialised they
//!   live in an mlocked, `MADV_DONTDUMP` arena with guard pages, and are
//!   cleared when freed; without it they sit on the ordinary heap (still
//!   cleared on free). [`harden_process`] initialises it.
//! - Our own copies (PEM for the backup, raw components for a token import,
//!   passphrases and PINs) are [`LockedBytes`]: page-aligned, mlocked,
//!   excluded from core dumps, zeroized and unlocked on drop.
//!
//! What is not covered, said plainly: a copy OpenSSL or a library makes
//! transiently on the ordinary heap (e.g. the PEM text rust-openssl returns
//! before we move it into a [`LockedBytes`]) is wiped by us or by OpenSSL but
//! not locked during its short life.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

use serde::Serialize;
use zeroize::Zeroize;

/// Size of the OpenSSL secure heap: room for a few RSA-4096 keys' numbers.
const SECURE_HEAP_BYTES: usize = 1 << 20;
/// Smallest secure-heap allocation.
const SECURE_HEAP_MIN: usize = 32;

extern "C" {
    // libcrypto (linked by openssl-sys); openssl-sys has no binding for it.
    fn CRYPTO_secure_malloc_init(size: usize, minsize: usize) -> std::ffi::c_int;
    fn CRYPTO_secure_malloc_initialized() -> std::ffi::c_int;
}

/// What [`harden_process`] achieved; each field is `Ok` or why not.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Hardening {
    /// `RLIMIT_CORE` set to 0 (soft and hard).
    pub core_limit_zero: Result<(), String>,
    /// `PR_SET_DUMPABLE` 0.
    pub not_dumpable: Result<(), String>,
    /// OpenSSL's secure heap in use and locked.
    pub openssl_secure_heap: Result<(), String>,
    /// All of the process's memory locked ([`lock_all_memory`]); `None` when not asked.
    pub all_memory_locked: Option<Result<(), String>>,
}

impl Hardening {
    /// Warnings for what failed, for the user.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if let Err(e) = &self.core_limit_zero {
            w.push(format!("could not turn core dumps off (RLIMIT_CORE): {e}"));
        }
        if let Err(e) = &self.not_dumpable {
            w.push(format!("could not make the process non-dumpable: {e}"));
        }
        if let Some(Err(e)) = &self.all_memory_locked {
            w.push(format!("process memory not locked as a whole: {e}"));
        }
        if let Err(e) = &self.openssl_secure_heap {
            w.push(format!(
                "OpenSSL's secure heap is not locked ({e}); the private key's numbers may be \
                 swapped out. Raise `ulimit -l` (RLIMIT_MEMLOCK) to at least 2 MiB or run with \
                 CAP_IPC_LOCK"
            ));
        }
        w
    }
}

/// Turns core dumps off, makes the process non-dumpable and sets up
/// OpenSSL's locked secure heap. Call it first thing in any command that
/// will hold a private key in memory; calling it again is harmless.
pub fn harden_process() -> Hardening {
    use nix::sys::resource::{setrlimit, Resource};
    let core_limit_zero = setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(|e| e.to_string());
    let not_dumpable = nix::sys::prctl::set_dumpable(false).map_err(|e| e.to_string());
    // SAFETY: plain libcrypto calls without pointers; initialising twice
    // returns 0 for the second call, so the first answer is checked.
    let openssl_secure_heap = unsafe {
        if CRYPTO_secure_malloc_initialized() == 1 {
            Ok(())
        } else {
            match CRYPTO_secure_malloc_init(SECURE_HEAP_BYTES, SECURE_HEAP_MIN) {
                1 => Ok(()),
                2 => Err("the heap exists but mlock or MADV_DONTDUMP failed".to_string()),
                _ => Err("CRYPTO_secure_malloc_init failed".to_string()),
            }
        }
    };
    Hardening {
        core_limit_zero,
        not_dumpable,
        openssl_secure_heap,
        all_memory_locked: None,
    }
}

/// [`harden_process`] plus [`lock_all_memory`]: for commands that hold a
/// private key (token create/restore, the hardened genkey layout).
pub fn harden_for_private_keys() -> Hardening {
    let mut h = harden_process();
    h.all_memory_locked = Some(lock_all_memory());
    h
}

/// Whether this process may lock unlimited memory: CAP_IPC_LOCK in its
/// effective set, or an unlimited RLIMIT_MEMLOCK.
fn may_lock_everything() -> bool {
    use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
    if getrlimit(Resource::RLIMIT_MEMLOCK).is_ok_and(|(soft, _)| soft == RLIM_INFINITY) {
        return true;
    }
    const CAP_IPC_LOCK: u32 = 14;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// Locks every page of the process, now and later (`mlockall(MCL_CURRENT |
/// MCL_FUTURE)`), so that no copy of a secret — ours, OpenSSL's, a
/// library's transient one — can be swapped out. Only done when the process
/// may lock without limit: under a small RLIMIT_MEMLOCK, MCL_FUTURE would
/// make later allocations fail. Returns why not otherwise.
pub fn lock_all_memory() -> Result<(), String> {
    if !may_lock_everything() {
        return Err(
            "no CAP_IPC_LOCK and RLIMIT_MEMLOCK is limited, so only sbkit's own secret buffers \
             are locked (in a container add --cap-add IPC_LOCK)"
                .into(),
        );
    }
    use nix::sys::mman::{mlockall, MlockAllFlags};
    mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE).map_err(|e| e.to_string())
}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map(|p| p as usize)
        .unwrap_or(4096)
}

/// A fixed-capacity byte buffer in its own mlocked pages, excluded from core
/// dumps, zeroized and unlocked when dropped. It never reallocates (a
/// reallocation would leave an unwiped copy behind), so the capacity is
/// chosen up front.
pub struct LockedBytes {
    ptr: NonNull<u8>,
    layout: Layout,
    len: usize,
    locked: bool,
}

// The buffer is plain owned memory.
unsafe impl Send for LockedBytes {}
unsafe impl Sync for LockedBytes {}

/// A [`LockedBytes`] cannot take more than its capacity.
#[derive(Debug, thiserror::Error)]
#[error("secret of more than {capacity} bytes: too long for its locked buffer")]
pub struct CapacityError {
    /// The buffer's capacity.
    pub capacity: usize,
}

impl LockedBytes {
    /// An empty buffer able to hold `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        let page = page_size();
        let size = capacity.max(1).div_ceil(page) * page;
        // Page-aligned and page-sized so that unlocking this buffer never
        // unlocks a page another buffer still needs (mlock does not nest).
        let layout = Layout::from_size_align(size, page).expect("page layout");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        // SAFETY: the range is exactly our allocation.
        let locked = unsafe {
            let addr = ptr.cast::<std::ffi::c_void>();
            let ok = nix::sys::mman::mlock(addr, size).is_ok();
            let _ = nix::sys::mman::madvise(addr, size, nix::sys::mman::MmapAdvise::MADV_DONTDUMP);
            ok
        };
        LockedBytes {
            ptr,
            layout,
            len: 0,
            locked,
        }
    }

    /// A locked copy of `bytes`.
    pub fn from_slice(bytes: &[u8]) -> Self {
        let mut b = Self::with_capacity(bytes.len());
        b.extend_from_slice(bytes)
            .expect("capacity was sized for it");
        b
    }

    /// Moves a secret held in an ordinary buffer into locked memory and wipes the original.
    pub fn take(mut bytes: Vec<u8>) -> Self {
        let b = Self::from_slice(&bytes);
        bytes.zeroize();
        b
    }

    /// Appends bytes, failing (and changing nothing) when they do not fit.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) -> Result<(), CapacityError> {
        if self.len + bytes.len() > self.layout.size() {
            return Err(CapacityError {
                capacity: self.layout.size(),
            });
        }
        // SAFETY: the destination range lies inside the allocation and does
        // not overlap `bytes` (we own it exclusively).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.as_ptr().add(self.len),
                bytes.len(),
            );
        }
        self.len += bytes.len();
        Ok(())
    }

    /// Removes trailing bytes (wiping them).
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            // SAFETY: the range lies inside the initialised part.
            unsafe {
                std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(len), self.len - len)
                    .zeroize();
            }
            self.len = len;
        }
    }

    /// Whether `mlock` succeeded (it fails under a low RLIMIT_MEMLOCK).
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// A locked copy.
    pub fn duplicate(&self) -> Self {
        Self::from_slice(self)
    }
}

impl std::ops::Deref for LockedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `len` bytes from `ptr` are initialised and owned by us.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for LockedBytes {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in Deref, and we have `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl PartialEq for LockedBytes {
    fn eq(&self, other: &Self) -> bool {
        // Constant time: these are secrets.
        self.len == other.len && (self.len == 0 || openssl::memcmp::eq(self, other))
    }
}

impl std::fmt::Debug for LockedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the contents.
        write!(f, "LockedBytes({} bytes)", self.len)
    }
}

impl Drop for LockedBytes {
    fn drop(&mut self) {
        // SAFETY: the whole allocation is ours; it is wiped before it is
        // unlocked and returned to the allocator.
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()).zeroize();
            if self.locked {
                let _ = nix::sys::mman::munlock(
                    self.ptr.cast::<std::ffi::c_void>(),
                    self.layout.size(),
                );
            }
            dealloc(self.ptr.as_ptr(), self.layout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locked_bytes_hold_and_refuse_overflow() {
        let mut b = LockedBytes::with_capacity(8);
        b.extend_from_slice(b"abc").unwrap();
        assert_eq!(&b[..], b"abc");
        // Capacity is rounded up to a page, never less than asked.
        let cap = page_size();
        assert!(b.extend_from_slice(&vec![0u8; cap]).is_err());
        assert_eq!(&b[..], b"abc");
        b.truncate(1);
        assert_eq!(&b[..], b"a");
        assert_eq!(LockedBytes::from_slice(b"x"), LockedBytes::from_slice(b"x"));
        assert_ne!(LockedBytes::from_slice(b"x"), LockedBytes::from_slice(b"y"));
        assert!(!format!("{b:?}").contains('a'));
    }

    #[test]
    fn hardening_turns_core_dumps_off() {
        // Runs in the test process: harmless, and exactly what the commands do.
        let h = harden_process();
        assert_eq!(h.core_limit_zero, Ok(()));
        let (soft, hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_CORE).unwrap();
        assert_eq!((soft, hard), (0, 0));
        assert_eq!(h.not_dumpable, Ok(()));
        assert!(!nix::sys::prctl::get_dumpable().unwrap());
    }
}

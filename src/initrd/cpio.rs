//! A streaming writer of cpio "newc" (`070701`) archives, the format the Linux
//! kernel unpacks into the initial rootfs.
//!
//! Each entry is a 110-byte ASCII header (magic and 13 fields of 8 hex digits),
//! the NUL-terminated name, zero padding to a multiple of 4, the data, and
//! zero padding to a multiple of 4. The archive ends with an entry named
//! `TRAILER!!!`.
//!
//! Hard links: every name of an inode is written with the same `ino` and an
//! `nlink` of at least 2; the data goes with the *first* name and the later
//! names have size 0. The kernel's unpacker (`do_name`/`maybe_link` in
//! init/initramfs.c) records the first name of an `(ino, major, minor, type)`
//! when `nlink >= 2` and creates the file with its data; each later name
//! becomes a `link()` to it, opened without `O_TRUNC`, so a size of 0 leaves
//! the data intact. GNU cpio extracts it too (it links size-0 names to the
//! inode it already wrote). The other convention, data on the last name
//! (GNU cpio's and gen_init_cpio's output), is also accepted by the kernel;
//! data-first is chosen because an entry stream can be written without
//! looking ahead, as a tar stream of image layers delivers data with the first
//! name and hard links after it.

use std::io::{self, Read, Write};

use super::entry::DeviceNumber;

/// The kernel's `PATH_MAX`: longer names and symlink targets are silently
/// skipped by its unpacker, so they are refused here instead.
pub const PATH_MAX: usize = 4096;

/// Size of a newc header.
const HEADER_LEN: u64 = 110;

/// Size of the buffer file data is copied through; fixed so memory stays bounded.
const COPY_BUF_LEN: usize = 128 * 1024;

/// Name of the entry that ends an archive.
const TRAILER: &[u8] = b"TRAILER!!!";

/// A failure while writing an entry.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    /// Writing to the output failed.
    #[error("writing the archive failed: {0}")]
    Write(#[source] io::Error),
    /// Reading an entry's data failed.
    #[error("reading the data failed: {0}")]
    Read(#[source] io::Error),
    /// The data source yielded more or fewer bytes than announced.
    #[error("expected {expected} bytes of data, the source has {found}")]
    LengthMismatch {
        /// The length written into the header.
        expected: u64,
        /// What the source delivered (`expected + 1` means "more").
        found: u64,
    },
    /// A value does not fit the 8 hex digits of its header field.
    #[error("{field} {value} does not fit a cpio newc header (at most {max})")]
    FieldTooLarge {
        /// The header field.
        field: &'static str,
        /// The value.
        value: u64,
        /// The largest value the field holds.
        max: u64,
    },
    /// The name is longer than the kernel accepts.
    #[error("the name is {len} bytes; the kernel unpacks names of at most {max} bytes")]
    NameTooLong {
        /// Length including the terminating NUL.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The name contains a NUL byte or is empty.
    #[error("the name is empty or contains a NUL byte")]
    BadName,
}

/// The metadata every entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Meta {
    /// Inode number; names of one inode share it.
    pub ino: u32,
    /// Permission bits (`0o7777`); the type bits are added by the writer.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count; at least 2 makes the kernel look for earlier names of `ino`.
    pub nlink: u32,
    /// Modification time, seconds since 1970.
    pub mtime: u32,
}

/// Which special file a data-less entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    /// A character device.
    CharDevice(DeviceNumber),
    /// A block device.
    BlockDevice(DeviceNumber),
    /// A named pipe.
    Fifo,
    /// A Unix domain socket.
    Socket,
}

impl Special {
    fn type_bits(self) -> u32 {
        match self {
            Special::CharDevice(_) => 0o020000,
            Special::BlockDevice(_) => 0o060000,
            Special::Fifo => 0o010000,
            Special::Socket => 0o140000,
        }
    }

    fn rdev(self) -> DeviceNumber {
        match self {
            Special::CharDevice(d) | Special::BlockDevice(d) => d,
            Special::Fifo | Special::Socket => DeviceNumber::default(),
        }
    }
}

const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;

/// Bytes an entry occupies in the archive: header, name and data, padded.
pub fn entry_len(name_len: usize, data_len: u64) -> u64 {
    align4(HEADER_LEN + name_len as u64 + 1) + align4(data_len)
}

/// Bytes of the trailer entry.
pub fn trailer_len() -> u64 {
    entry_len(TRAILER.len(), 0)
}

fn align4(n: u64) -> u64 {
    (n + 3) & !3
}

/// A cpio newc writer streaming into `W`; call [`CpioWriter::finish`] to end
/// the archive.
pub struct CpioWriter<W: Write> {
    inner: W,
    written: u64,
    buf: Box<[u8]>,
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive.
    pub fn new(inner: W) -> Self {
        CpioWriter {
            inner,
            written: 0,
            buf: vec![0u8; COPY_BUF_LEN].into_boxed_slice(),
        }
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Writes a regular file whose `size` bytes are read from `data`; fails if
    /// `data` yields a different number of bytes.
    pub fn file(
        &mut self,
        name: &[u8],
        meta: &Meta,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<(), CpioError> {
        let filesize = field("file size", size)?;
        self.header(name, S_IFREG, meta, filesize, DeviceNumber::default())?;
        self.copy_exact(data, size)?;
        self.pad(size)
    }

    /// Writes a later name of a regular file written before with the same `ino`.
    pub fn file_link(&mut self, name: &[u8], meta: &Meta) -> Result<(), CpioError> {
        self.header(name, S_IFREG, meta, 0, DeviceNumber::default())
    }

    /// Writes a directory.
    pub fn directory(&mut self, name: &[u8], meta: &Meta) -> Result<(), CpioError> {
        self.header(name, S_IFDIR, meta, 0, DeviceNumber::default())
    }

    /// Writes a symlink; the target is its data, without a NUL.
    pub fn symlink(&mut self, name: &[u8], meta: &Meta, target: &[u8]) -> Result<(), CpioError> {
        if target.len() > PATH_MAX {
            return Err(CpioError::NameTooLong {
                len: target.len(),
                max: PATH_MAX,
            });
        }
        let size = target.len() as u64;
        self.header(
            name,
            S_IFLNK,
            meta,
            field("target length", size)?,
            DeviceNumber::default(),
        )?;
        self.put(target)?;
        self.pad(size)
    }

    /// Writes a device node, FIFO or socket.
    pub fn special(&mut self, name: &[u8], meta: &Meta, special: Special) -> Result<(), CpioError> {
        self.header(name, special.type_bits(), meta, 0, special.rdev())
    }

    /// Writes the trailer, flushes, and returns the output and the archive length.
    pub fn finish(mut self) -> Result<(W, u64), CpioError> {
        let meta = Meta {
            nlink: 1,
            ..Meta::default()
        };
        self.header(TRAILER, 0, &meta, 0, DeviceNumber::default())?;
        self.inner.flush().map_err(CpioError::Write)?;
        Ok((self.inner, self.written))
    }

    fn header(
        &mut self,
        name: &[u8],
        type_bits: u32,
        meta: &Meta,
        filesize: u32,
        rdev: DeviceNumber,
    ) -> Result<(), CpioError> {
        check_name(name)?;
        let namesize = name.len() + 1;
        let fields = [
            meta.ino,
            type_bits | (meta.mode & 0o7777),
            meta.uid,
            meta.gid,
            meta.nlink,
            meta.mtime,
            filesize,
            0, // devmajor: one device for the whole archive
            0, // devminor
            rdev.major,
            rdev.minor,
            namesize as u32, // at most PATH_MAX, checked above
            0,               // check: only the 070702 variant has checksums
        ];
        let mut head = Vec::with_capacity(HEADER_LEN as usize + namesize + 3);
        head.extend_from_slice(b"070701");
        for value in fields {
            push_hex8(&mut head, value);
        }
        head.extend_from_slice(name);
        head.push(0);
        head.resize(align4(head.len() as u64) as usize, 0);
        self.put(&head)
    }

    fn copy_exact(&mut self, data: &mut dyn Read, size: u64) -> Result<(), CpioError> {
        let mut remaining = size;
        while remaining > 0 {
            let want = remaining.min(self.buf.len() as u64) as usize;
            let n = read_retrying(data, &mut self.buf[..want])?;
            if n == 0 {
                return Err(CpioError::LengthMismatch {
                    expected: size,
                    found: size - remaining,
                });
            }
            self.inner
                .write_all(&self.buf[..n])
                .map_err(CpioError::Write)?;
            self.written += n as u64;
            remaining -= n as u64;
        }
        // A source that grew would otherwise be cut silently.
        if read_retrying(data, &mut self.buf[..1])? != 0 {
            return Err(CpioError::LengthMismatch {
                expected: size,
                found: size + 1,
            });
        }
        Ok(())
    }

    fn pad(&mut self, len: u64) -> Result<(), CpioError> {
        let pad = (align4(len) - len) as usize;
        self.put(&[0u8; 3][..pad])
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), CpioError> {
        self.inner.write_all(bytes).map_err(CpioError::Write)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

fn push_hex8(out: &mut Vec<u8>, value: u32) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    for shift in (0..8).rev() {
        out.push(DIGITS[((value >> (shift * 4)) & 0xf) as usize]);
    }
}

fn read_retrying(data: &mut dyn Read, buf: &mut [u8]) -> Result<usize, CpioError> {
    loop {
        match data.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CpioError::Read(e)),
        }
    }
}

fn check_name(name: &[u8]) -> Result<(), CpioError> {
    if name.is_empty() || name.contains(&0) {
        return Err(CpioError::BadName);
    }
    if name.len() + 1 > PATH_MAX {
        return Err(CpioError::NameTooLong {
            len: name.len() + 1,
            max: PATH_MAX,
        });
    }
    Ok(())
}

fn field(name: &'static str, value: u64) -> Result<u32, CpioError> {
    u32::try_from(value).map_err(|_| CpioError::FieldTooLarge {
        field: name,
        value,
        max: u32::MAX as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(ino: u32) -> Meta {
        Meta {
            ino,
            mode: 0o644,
            uid: 1000,
            gid: 100,
            nlink: 1,
            mtime: 0x5f5e100,
        }
    }

    /// Parses the archive back into (name, header fields, data).
    fn parse(mut a: &[u8]) -> Vec<(String, [u32; 13], Vec<u8>)> {
        let mut out = Vec::new();
        let mut offset = 0usize;
        loop {
            assert_eq!(offset % 4, 0);
            assert_eq!(&a[..6], b"070701");
            let mut f = [0u32; 13];
            for (i, v) in f.iter_mut().enumerate() {
                let s = std::str::from_utf8(&a[6 + 8 * i..14 + 8 * i]).unwrap();
                *v = u32::from_str_radix(s, 16).unwrap();
            }
            let namesize = f[11] as usize;
            let name = String::from_utf8(a[110..110 + namesize - 1].to_vec()).unwrap();
            assert_eq!(a[110 + namesize - 1], 0);
            let data_at = align4(110 + namesize as u64) as usize;
            let size = f[6] as usize;
            let data = a[data_at..data_at + size].to_vec();
            let next = data_at + align4(size as u64) as usize;
            assert!(a[110 + namesize..data_at].iter().all(|&b| b == 0));
            assert!(a[data_at + size..next].iter().all(|&b| b == 0));
            a = &a[next..];
            offset += next;
            let done = name == "TRAILER!!!";
            out.push((name, f, data));
            if done {
                assert!(a.is_empty());
                return out;
            }
        }
    }

    #[test]
    fn writes_every_kind_with_padding() {
        let mut w = CpioWriter::new(Vec::new());
        let dir = Meta {
            mode: 0o1777,
            nlink: 2,
            ..meta(1)
        };
        w.directory(b".", &dir).unwrap();
        w.file(b"a", &meta(2), 5, &mut &b"hello"[..]).unwrap();
        w.symlink(b"ln", &meta(3), b"a").unwrap();
        let dev = DeviceNumber { major: 5, minor: 1 };
        w.special(b"console", &meta(4), Special::CharDevice(dev))
            .unwrap();
        w.special(b"fifo", &meta(5), Special::Fifo).unwrap();
        let len = w.bytes_written();
        let (out, total) = w.finish().unwrap();
        assert_eq!(total, out.len() as u64);
        assert_eq!(total, len + trailer_len());
        let entries = parse(&out);
        let names: Vec<_> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, [".", "a", "ln", "console", "fifo", "TRAILER!!!"]);
        assert_eq!(entries[0].1[1], 0o041777);
        assert_eq!(entries[1].1[1], 0o100644);
        assert_eq!((entries[1].1[2], entries[1].1[3]), (1000, 100));
        assert_eq!(entries[1].2, b"hello");
        assert_eq!(entries[2].1[1], 0o120644);
        assert_eq!(entries[2].2, b"a");
        assert_eq!(entries[3].1[1], 0o020644);
        assert_eq!((entries[3].1[9], entries[3].1[10]), (5, 1));
        assert_eq!(entries[4].1[1], 0o010644);
        assert_eq!(entries[0].1[5], 0x5f5e100);
    }

    #[test]
    fn entry_len_matches_the_bytes_written() {
        for name_len in 1..9 {
            for data_len in 0..9u64 {
                let mut w = CpioWriter::new(Vec::new());
                let name = vec![b'n'; name_len];
                let data = vec![7u8; data_len as usize];
                w.file(&name, &meta(1), data_len, &mut &data[..]).unwrap();
                assert_eq!(w.bytes_written(), entry_len(name_len, data_len));
            }
        }
    }

    #[test]
    fn hard_links_carry_data_once() {
        let mut w = CpioWriter::new(Vec::new());
        let linked = Meta {
            nlink: 2,
            ..meta(9)
        };
        w.file(b"x", &linked, 3, &mut &b"abc"[..]).unwrap();
        w.file_link(b"y", &linked).unwrap();
        let (out, _) = w.finish().unwrap();
        let e = parse(&out);
        assert_eq!((e[0].1[0], e[0].1[4], e[0].1[6]), (9, 2, 3));
        assert_eq!((e[1].1[0], e[1].1[4], e[1].1[6]), (9, 2, 0));
    }

    #[test]
    fn refuses_short_and_long_sources() {
        let mut w = CpioWriter::new(Vec::new());
        let e = w.file(b"x", &meta(1), 4, &mut &b"abc"[..]).unwrap_err();
        assert!(matches!(
            e,
            CpioError::LengthMismatch {
                expected: 4,
                found: 3
            }
        ));
        let mut w = CpioWriter::new(Vec::new());
        let e = w.file(b"x", &meta(1), 2, &mut &b"abc"[..]).unwrap_err();
        assert!(matches!(
            e,
            CpioError::LengthMismatch {
                expected: 2,
                found: 3
            }
        ));
    }

    #[test]
    fn refuses_what_the_kernel_would_skip() {
        let mut w = CpioWriter::new(Vec::new());
        let long = vec![b'a'; PATH_MAX];
        assert!(matches!(
            w.directory(&long, &meta(1)),
            Err(CpioError::NameTooLong { .. })
        ));
        assert!(matches!(
            w.symlink(b"l", &meta(1), &vec![b'a'; PATH_MAX + 1]),
            Err(CpioError::NameTooLong { .. })
        ));
        assert!(matches!(
            w.directory(b"a\0b", &meta(1)),
            Err(CpioError::BadName)
        ));
        let big = 1u64 << 32;
        assert!(matches!(
            w.file(b"big", &meta(1), big, &mut std::io::empty()),
            Err(CpioError::FieldTooLarge { .. })
        ));
        // Nothing was written by the refused entries.
        assert_eq!(w.bytes_written(), 0);
    }

    #[test]
    fn read_errors_are_reported_as_reads() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("boom"))
            }
        }
        let mut w = CpioWriter::new(Vec::new());
        assert!(matches!(
            w.file(b"x", &meta(1), 1, &mut Failing),
            Err(CpioError::Read(_))
        ));
    }
}

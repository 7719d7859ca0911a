//! Durable writes of the last segment's records through `io_uring`, with `O_DIRECT` and
//! `O_DSYNC`: one submitted write that completes once the records are on disk.
//!
//! Why: a buffered `pwrite` and `fdatasync` makes the writing thread sleep twice per group
//! commit, once for the data and once for the disk's cache flush, and each wake-up takes the
//! gateway's core from the exchanges. Submitted through `io_uring`, an `O_DIRECT | O_DSYNC`
//! write completes asynchronously in the kernel: the cache flush is issued by the kernel's
//! completion work, on the core that took the disk's interrupt, and the thread is woken once.
//! Measured on the benchmark machine, core 0's time per durable write went from 40 µs to 17 µs
//! (`benches/RESULTS.md`, "Ninth round"; `splpd-bench audit-sync` has the rows).
//!
//! `O_DIRECT` takes whole blocks from an aligned buffer at an aligned offset, so the writer
//! writes the last block it wrote again with the new records after it (see `files`). The
//! bytes before the new records are the same as on disk, so a write torn by a crash leaves
//! each sector either as it was or as written, and the records already synced intact.
//!
//! This is the workspace's one module with `unsafe` code: handing the kernel a buffer is
//! `unsafe` because the kernel reads it after the call that submits it returns. The buffer
//! belongs to the [`DirectWriter`] and is borrowed for the whole of [`DirectWriter::write`],
//! which returns only once the kernel has answered; if the wait fails while the write may still
//! be in flight, the buffer is leaked rather than freed, and the writer refuses further writes.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use io_uring::{IoUring, opcode, types};

/// The alignment of a direct write's buffer, offset and length: 4 KiB, the page size and the
/// largest logical block size of the disks in use.
pub(crate) const ALIGN: usize = 4096;

/// What marks the writer's one operation in the completion queue.
const WRITE_TAG: u64 = 0x5350_4c50;

/// One `io_uring` instance and the aligned buffer it writes from, reused from write to write.
pub struct DirectWriter {
    ring: IoUring,
    buf: Vec<u8>,
    /// A wait failed with the write possibly in flight: nothing more goes through this ring.
    broken: bool,
}

impl std::fmt::Debug for DirectWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectWriter").field("buffer", &self.buf.len()).field("broken", &self.broken).finish()
    }
}

impl DirectWriter {
    /// Sets up the ring. Fails where `io_uring` is not available: kernels before 5.6, kernels
    /// with `kernel.io_uring_disabled` set, and containers whose seccomp profile refuses it.
    pub fn new() -> io::Result<Self> {
        Ok(Self { ring: IoUring::new(2)?, buf: Vec::new(), broken: false })
    }

    /// Opens `path` for durable direct writes (`O_DIRECT | O_DSYNC`). Fails on file systems
    /// without direct I/O.
    pub fn open(path: &Path) -> io::Result<File> {
        OpenOptions::new().write(true).custom_flags(libc::O_DIRECT | libc::O_DSYNC).open(path)
    }

    /// Whether a failed wait left a write possibly in flight; such a writer only refuses.
    pub fn broken(&self) -> bool {
        self.broken
    }

    /// Writes `parts`, one after the other and padded with zeros to a multiple of [`ALIGN`], at
    /// `offset` (a multiple of [`ALIGN`]) of `file`, opened by [`open`](Self::open); returns
    /// once they are on disk.
    pub fn write(&mut self, file: &File, offset: u64, parts: &[&[u8]]) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other("the io_uring instance was abandoned after a failed wait"));
        }
        if !offset.is_multiple_of(ALIGN as u64) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a direct write must start at a 4 KiB boundary"));
        }
        let len = parts.iter().map(|p| p.len()).sum::<usize>().next_multiple_of(ALIGN);
        if self.buf.len() < len + ALIGN {
            self.buf = vec![0; (len + ALIGN).next_power_of_two()];
        }
        let at = self.buf.as_ptr().align_offset(ALIGN);
        let region = self.buf.get_mut(at..at + len).ok_or_else(|| io::Error::other("cannot align the buffer"))?;
        let mut filled = 0;
        for part in parts {
            region[filled..filled + part.len()].copy_from_slice(part);
            filled += part.len();
        }
        region[filled..].fill(0);

        let mut done = 0;
        while done < len {
            let rest = &region[done..];
            let rest_len = u32::try_from(rest.len()).map_err(|_| io::Error::other("a direct write over 4 GiB"))?;
            let write = opcode::Write::new(types::Fd(file.as_raw_fd()), rest.as_ptr(), rest_len)
                .offset(offset + done as u64)
                .build()
                .user_data(WRITE_TAG);
            // SAFETY: the entry points into `region`, which lives in `self.buf` and stays
            // borrowed until `reap` has the completion of this very write. `reap` returns before
            // that only when the ring can no longer be trusted; it then marks the writer broken
            // and leaks the buffer, so the memory stays valid for as long as the kernel may read it.
            let pushed = unsafe { self.ring.submission().push(&write) };
            pushed.map_err(|_| io::Error::other("the io_uring submission queue is full"))?;
            let written = match reap(&mut self.ring) {
                Ok(n) => n,
                Err(e) => {
                    self.broken = true;
                    std::mem::forget(std::mem::take(&mut self.buf));
                    return Err(e);
                }
            };
            if written < 0 {
                return Err(io::Error::from_raw_os_error(-written));
            }
            if written == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "a direct write wrote nothing"));
            }
            // Positive and at most `rest_len`, so the casts cannot truncate.
            done += written as usize;
            if !done.is_multiple_of(ALIGN) {
                return Err(io::Error::other(format!("a direct write stopped at {done} bytes, inside a block")));
            }
        }
        Ok(())
    }
}

/// Submits what is queued and waits for the write's completion; its result, as `write(2)`'s
/// (bytes written, or minus an errno).
fn reap(ring: &mut IoUring) -> io::Result<i32> {
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            // A signal: the write, if submitted, goes on; wait again.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if let Some(done) = ring.completion().find(|c| c.user_data() == WRITE_TAG) {
            return Ok(done.result());
        }
    }
}

/// Whether `error` from [`DirectWriter::open`] or [`DirectWriter::write`] means that direct
/// writes do not work here at all (a file system or device that refuses them, a kernel that
/// lacks the operation), rather than that the disk failed.
pub fn unsupported(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt as _;

    use super::*;

    #[test]
    fn a_direct_write_puts_its_parts_padded_with_zeros_at_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![0xee_u8; 4 * ALIGN]).unwrap();
        // This test asks for the machine the gateway is meant for: Linux with io_uring, and a
        // file system with direct I/O (tmpfs has it since Linux 6.6).
        let mut writer = DirectWriter::new().expect("io_uring is available");
        let file = DirectWriter::open(&path).expect("the file system takes O_DIRECT");
        writer.write(&file, ALIGN as u64, &[b"hello ", b"", &[7; 5000]]).unwrap();
        let mut back = vec![0; 4 * ALIGN];
        File::open(&path).unwrap().read_exact_at(&mut back, 0).unwrap();
        assert!(back[..ALIGN].iter().all(|&b| b == 0xee), "before the offset: untouched");
        assert_eq!(&back[ALIGN..ALIGN + 6], b"hello ");
        assert!(back[ALIGN + 6..ALIGN + 5006].iter().all(|&b| b == 7));
        assert!(back[ALIGN + 5006..3 * ALIGN].iter().all(|&b| b == 0), "padded with zeros to a whole block");
        assert!(back[3 * ALIGN..].iter().all(|&b| b == 0xee), "after the padding: untouched");
    }

    #[test]
    fn a_direct_write_at_an_unaligned_offset_is_refused_before_the_kernel_sees_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![0_u8; 2 * ALIGN]).unwrap();
        let mut writer = DirectWriter::new().expect("io_uring is available");
        let file = DirectWriter::open(&path).expect("the file system takes O_DIRECT");
        let e = writer.write(&file, 100, &[b"x"]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        assert!(!writer.broken());
    }

    #[test]
    fn a_kernel_error_is_returned_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![0_u8; 2 * ALIGN]).unwrap();
        let mut writer = DirectWriter::new().expect("io_uring is available");
        // Opened read-only: the kernel answers the write with EBADF.
        let file = File::open(&path).unwrap();
        let e = writer.write(&file, 0, &[b"x"]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{e}");
        assert!(!unsupported(&e));
        assert!(!writer.broken(), "the ring is still good");
        let file = DirectWriter::open(&path).unwrap();
        writer.write(&file, 0, &[b"x"]).unwrap();
    }
}

//! The journal's file operations behind one small trait, so that tests can
//! run the journal on a simulated disk that loses power (`sim_disk`).
//!
//! Production uses [`RealDisk`]: `std::fs` and two libc calls (flock,
//! fadvise), exactly what the journal did before the trait existed. The
//! journal holds its disk as an `Arc<dyn Disk>` and its open files as
//! `Box<dyn DiskFile>`, not as a type parameter: a virtual call costs
//! nanoseconds next to a write system call and an fsync, and a parameter
//! would spread into `ShardJournal`'s type, the writer thread, the engine's
//! durable module and the benchmark for no gain.
//!
//! What the journal assumes of a disk, and so what the simulation models:
//!
//! - File content written since the last `sync_data`/`sync_all` of that
//!   file may be lost, or kept in part, by a power cut. A sync that fails
//!   may have lost it already: the journal writes it again, never counts
//!   on a second sync.
//! - Creating, renaming and removing a file is durable once its directory
//!   is synced with [`Disk::sync_dir`]; before that a power cut may undo
//!   it. Directory changes reach the disk in the order they were made.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Something held for as long as a lock lasts.
pub(crate) type LockGuard = Box<dyn fmt::Debug + Send>;

/// The file and directory operations the journal uses.
pub(crate) trait Disk: fmt::Debug + Send + Sync {
    /// Creates `dir` and its missing parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Opens `path` for writing, creating it empty if missing, keeping what
    /// it holds.
    fn open_or_create(&self, path: &Path) -> io::Result<Box<dyn DiskFile>>;
    /// Creates `path` empty, emptying it if it exists.
    fn create(&self, path: &Path) -> io::Result<Box<dyn DiskFile>>;
    /// Opens an existing file for writing (`NotFound` if none).
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn DiskFile>>;
    /// Opens an existing file for reading (`NotFound` if none).
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn DiskFile>>;
    /// Appends the whole content of `path` to `buf`.
    fn read_to_end(&self, path: &Path, buf: &mut Vec<u8>) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes `path` (`NotFound` if none).
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// The names of the entries of `dir`, in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>>;
    /// Makes the creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes the exclusive lock on `path` (creating it), held while the
    /// guard lives; `EWOULDBLOCK` when another process holds it.
    fn lock(&self, path: &Path) -> io::Result<LockGuard>;
    /// A hint that `path` is about to be read whole.
    fn prefetch(&self, _path: &Path) {}
}

/// An open file of a [`Disk`].
pub(crate) trait DiskFile: fmt::Debug + Send {
    /// Writes all of `buf` at `off`.
    fn write_all_at(&self, buf: &[u8], off: u64) -> io::Result<()>;
    /// Fills `buf` from `off` (`UnexpectedEof` past the end).
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()>;
    /// The file's length.
    fn size(&self) -> io::Result<u64>;
    /// Cuts or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the content durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the content and the metadata durable (fsync).
    fn sync_all(&self) -> io::Result<()>;
}

/// The disk the journal runs on in production: `std::fs`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RealDisk;

impl Disk for RealDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn open_or_create(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        Ok(Box::new(write_options().create(true).open(path)?))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        Ok(Box::new(File::create(path)?))
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        Ok(Box::new(write_options().open(path)?))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        Ok(Box::new(File::open(path)?))
    }

    fn read_to_end(&self, path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
        File::open(path)?.read_to_end(buf).map(drop)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect()
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock(&self, path: &Path) -> io::Result<LockGuard> {
        let f = write_options().create(true).open(path)?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Box::new(f))
    }

    fn prefetch(&self, path: &Path) {
        if let Ok(f) = File::open(path) {
            // SAFETY: an advisory call on a descriptor we own.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED) };
        }
    }
}

/// Write access that keeps what the file holds.
fn write_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.write(true).truncate(false);
    o
}

impl DiskFile for File {
    fn write_all_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, off)
    }

    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, off)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn sync_all(&self) -> io::Result<()> {
        File::sync_all(self)
    }
}

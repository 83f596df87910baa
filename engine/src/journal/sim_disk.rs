//! A simulated disk for tests: files in memory that lose, when the power
//! is cut, what was not synced, and that fail a write or a sync on request.
//!
//! Each file keeps what reads see and what is on the platter, plus the
//! changes (writes, length changes) made since its last sync, in order.
//!
//! - A sync puts the pending changes on the platter. A sync that fails
//!   (injected) drops them instead, while reads still see them: what Linux
//!   does with dirty pages whose write-back failed. A later sync does not
//!   bring them back; only writing them again does.
//! - Creating, renaming and removing a file changes the directory at once
//!   for readers; on the platter only after a directory sync. The pending
//!   directory changes reach it in order (a journaling file system).
//!   Directories themselves are durable at once (the journal never syncs a
//!   parent directory; see the module docs of `journal`).
//! - [`SimDisk::cut_after`] plans the power cut: after that many more
//!   changing operations every operation fails with EIO. The operation the
//!   power dies in is a write that may still be half done.
//! - [`SimDisk::power_cut`] then keeps, per file, what was synced plus a
//!   random prefix of its pending changes, the last one kept torn at a
//!   random byte; and the directory as synced plus a random prefix of its
//!   pending changes. After it everything is on the platter.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::disk::{Disk, DiskFile, LockGuard};

/// A small deterministic random number generator (SplitMix64).
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    /// True with probability `percent` / 100.
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// An operation the disk can be told to fail once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Fault {
    /// The next write of a file.
    Write,
    /// The next sync of a file (its pending changes are lost).
    Sync,
    /// The next sync of a directory.
    SyncDir,
}

/// What the power cuts did, for the simulation's summary.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CutStats {
    /// Power cuts.
    pub(crate) cuts: u64,
    /// Pending writes kept in part.
    pub(crate) torn: u64,
    /// Pending changes lost whole.
    pub(crate) lost: u64,
    /// Pending directory changes undone.
    pub(crate) dir_undone: u64,
    /// Injected faults that hit.
    pub(crate) faults: u64,
}

#[derive(Debug, Clone)]
enum Change {
    Write { off: u64, bytes: Vec<u8> },
    SetLen(u64),
}

impl Change {
    fn apply(&self, data: &mut Vec<u8>) {
        match self {
            Change::Write { off, bytes } => {
                let off = *off as usize;
                if data.len() < off + bytes.len() {
                    data.resize(off + bytes.len(), 0);
                }
                data[off..off + bytes.len()].copy_from_slice(bytes);
            }
            Change::SetLen(len) => data.resize(*len as usize, 0),
        }
    }
}

#[derive(Debug, Default)]
struct Inode {
    /// What reads see.
    data: Vec<u8>,
    /// What is on the platter.
    synced: Vec<u8>,
    /// Changes since the last sync, in order.
    pending: Vec<Change>,
}

#[derive(Debug, Clone)]
enum DirChange {
    Link(PathBuf, usize),
    Unlink(PathBuf),
    Rename(PathBuf, PathBuf),
}

impl DirChange {
    fn apply(&self, names: &mut BTreeMap<PathBuf, usize>) {
        match self {
            DirChange::Link(p, ino) => {
                names.insert(p.clone(), *ino);
            }
            DirChange::Unlink(p) => {
                names.remove(p);
            }
            DirChange::Rename(from, to) => {
                if let Some(ino) = names.remove(from) {
                    names.insert(to.clone(), ino);
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct State {
    inodes: Vec<Inode>,
    dirs: BTreeSet<PathBuf>,
    /// The directory as readers see it.
    names: BTreeMap<PathBuf, usize>,
    /// The directory on the platter.
    synced_names: BTreeMap<PathBuf, usize>,
    /// Directory changes since the last directory sync, in order.
    dir_pending: Vec<DirChange>,
    /// Faults to inject, each once, optionally only for one path, after
    /// letting this many matching operations pass.
    faults: Vec<(Fault, Option<PathBuf>, u32)>,
    /// Changing operations left before the power goes.
    ops_left: Option<u64>,
    dead: bool,
    stats: CutStats,
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

fn not_found() -> io::Error {
    io::Error::from(io::ErrorKind::NotFound)
}

impl State {
    fn alive(&self) -> io::Result<()> {
        if self.dead { Err(eio()) } else { Ok(()) }
    }

    /// Counts one changing operation; false when the power dies in it.
    fn tick(&mut self) -> io::Result<bool> {
        self.alive()?;
        match &mut self.ops_left {
            Some(0) => {
                self.dead = true;
                Ok(false)
            }
            Some(n) => {
                *n -= 1;
                Ok(true)
            }
            None => Ok(true),
        }
    }

    /// Whether an injected fault hits this operation (and uses it up).
    fn fault(&mut self, kind: Fault, path: &Path) -> bool {
        let mut hit = false;
        self.faults.retain_mut(|(k, p, pass)| {
            if hit || *k != kind || p.as_deref().is_some_and(|p| p != path) {
                return true;
            }
            if *pass > 0 {
                *pass -= 1;
                return true;
            }
            hit = true;
            false
        });
        self.stats.faults += u64::from(hit);
        hit
    }

    fn dir_change(&mut self, change: DirChange) {
        change.apply(&mut self.names);
        self.dir_pending.push(change);
    }

    fn lookup(&self, path: &Path) -> io::Result<usize> {
        self.names.get(path).copied().ok_or_else(not_found)
    }

    fn parent_exists(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(d) if self.dirs.contains(d) => Ok(()),
            _ => Err(not_found()),
        }
    }

    fn new_inode(&mut self, path: &Path) -> usize {
        self.inodes.push(Inode::default());
        let ino = self.inodes.len() - 1;
        self.dir_change(DirChange::Link(path.to_path_buf(), ino));
        ino
    }
}

/// The simulated disk; clones share it.
#[derive(Debug, Clone, Default)]
pub(crate) struct SimDisk {
    state: Arc<Mutex<State>>,
}

impl SimDisk {
    pub(crate) fn new() -> Self {
        SimDisk::default()
    }

    /// The power goes after `ops` more changing operations (writes, length
    /// changes, syncs, directory changes).
    pub(crate) fn cut_after(&self, ops: u64) {
        self.state.lock().ops_left = Some(ops);
    }

    /// Whether the power is gone (every operation fails).
    pub(crate) fn is_dead(&self) -> bool {
        self.state.lock().dead
    }

    /// Fails the next `fault` operation, of `path` only if given.
    pub(crate) fn inject(&self, fault: Fault, path: Option<&Path>) {
        self.inject_later(fault, path, 0);
    }

    /// [`SimDisk::inject`], letting `pass` matching operations succeed
    /// first.
    pub(crate) fn inject_later(&self, fault: Fault, path: Option<&Path>, pass: u32) {
        self.state
            .lock()
            .faults
            .push((fault, path.map(Path::to_path_buf), pass));
    }

    /// The power cut: keeps what was synced and a random part of the rest
    /// (see the module docs), then powers the disk up again.
    pub(crate) fn power_cut(&self, rng: &mut Rng) {
        let mut st = self.state.lock();
        let st = &mut *st;
        st.stats.cuts += 1;
        // A file in neither directory is gone for good: nothing to keep.
        let reachable: BTreeSet<usize> = st
            .names
            .values()
            .chain(st.synced_names.values())
            .copied()
            .collect();
        for (ino, inode) in st.inodes.iter_mut().enumerate() {
            if !reachable.contains(&ino) {
                *inode = Inode::default();
                continue;
            }
            let pending = std::mem::take(&mut inode.pending);
            let keep = rng.below(pending.len() as u64 + 1) as usize;
            let mut data = std::mem::take(&mut inode.synced);
            for (i, change) in pending.iter().take(keep).enumerate() {
                match change {
                    Change::Write { off, bytes } if i + 1 == keep => {
                        let n = rng.below(bytes.len() as u64 + 1) as usize;
                        if n < bytes.len() {
                            st.stats.torn += 1;
                        }
                        Change::Write {
                            off: *off,
                            bytes: bytes[..n].to_vec(),
                        }
                        .apply(&mut data);
                    }
                    c => c.apply(&mut data),
                }
            }
            st.stats.lost += (pending.len() - keep) as u64;
            inode.data = data.clone();
            inode.synced = data;
        }
        let pending = std::mem::take(&mut st.dir_pending);
        let keep = rng.below(pending.len() as u64 + 1) as usize;
        for change in &pending[..keep] {
            change.apply(&mut st.synced_names);
        }
        st.stats.dir_undone += (pending.len() - keep) as u64;
        st.names = st.synced_names.clone();
        st.faults.clear();
        st.ops_left = None;
        st.dead = false;
    }

    pub(crate) fn stats(&self) -> CutStats {
        self.state.lock().stats
    }

    /// The length of `path` as readers see it, if it exists.
    pub(crate) fn len_of(&self, path: &Path) -> Option<u64> {
        let st = self.state.lock();
        let ino = *st.names.get(path)?;
        Some(st.inodes[ino].data.len() as u64)
    }

    fn file(&self, path: &Path, ino: usize) -> Box<dyn DiskFile> {
        Box::new(SimFile {
            state: self.state.clone(),
            path: path.to_path_buf(),
            ino,
        })
    }
}

impl Disk for SimDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.alive()?;
        for d in dir.ancestors() {
            st.dirs.insert(d.to_path_buf());
        }
        Ok(())
    }

    fn open_or_create(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let mut st = self.state.lock();
        st.alive()?;
        st.parent_exists(path)?;
        let ino = match st.names.get(path) {
            Some(&ino) => ino,
            None => {
                if !st.tick()? {
                    return Err(eio());
                }
                st.new_inode(path)
            }
        };
        Ok(self.file(path, ino))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let mut st = self.state.lock();
        st.parent_exists(path)?;
        if !st.tick()? {
            return Err(eio());
        }
        let ino = match st.names.get(path) {
            Some(&ino) => {
                st.inodes[ino].data.clear();
                st.inodes[ino].pending.push(Change::SetLen(0));
                ino
            }
            None => st.new_inode(path),
        };
        Ok(self.file(path, ino))
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        let st = self.state.lock();
        st.alive()?;
        let ino = st.lookup(path)?;
        Ok(self.file(path, ino))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn DiskFile>> {
        self.open_write(path)
    }

    fn read_to_end(&self, path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
        let st = self.state.lock();
        st.alive()?;
        let ino = st.lookup(path)?;
        buf.extend_from_slice(&st.inodes[ino].data);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.lookup(from)?;
        st.parent_exists(to)?;
        if !st.tick()? {
            return Err(eio());
        }
        st.dir_change(DirChange::Rename(from.to_path_buf(), to.to_path_buf()));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.lookup(path)?;
        if !st.tick()? {
            return Err(eio());
        }
        st.dir_change(DirChange::Unlink(path.to_path_buf()));
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<OsString>> {
        let st = self.state.lock();
        st.alive()?;
        if !st.dirs.contains(dir) {
            return Err(not_found());
        }
        Ok(st
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(OsString::from))
            .collect())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        if !st.tick()? || st.fault(Fault::SyncDir, dir) {
            return Err(eio());
        }
        // One directory in practice; a journaling file system commits
        // every pending change in order anyway.
        let pending = std::mem::take(&mut st.dir_pending);
        for change in &pending {
            change.apply(&mut st.synced_names);
        }
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<LockGuard> {
        self.open_or_create(path)?;
        Ok(Box::new(()))
    }
}

/// An open file of a [`SimDisk`]: it follows its inode through renames and
/// removals, as a descriptor does.
#[derive(Debug)]
struct SimFile {
    state: Arc<Mutex<State>>,
    /// The path it was opened by (for injected faults).
    path: PathBuf,
    ino: usize,
}

impl SimFile {
    fn change(&self, change: Change, fault: Option<Fault>) -> io::Result<()> {
        let mut st = self.state.lock();
        let alive = st.tick()?;
        if let Some(f) = fault
            && alive
            && st.fault(f, &self.path)
        {
            return Err(eio());
        }
        let inode = &mut st.inodes[self.ino];
        change.apply(&mut inode.data);
        inode.pending.push(change);
        // Dying in the middle of a write: what it did so far may remain.
        if alive { Ok(()) } else { Err(eio()) }
    }

    fn sync(&self) -> io::Result<()> {
        let mut st = self.state.lock();
        if !st.tick()? {
            return Err(eio());
        }
        let failed = st.fault(Fault::Sync, &self.path);
        let inode = &mut st.inodes[self.ino];
        let pending = std::mem::take(&mut inode.pending);
        if failed {
            // The pages were marked clean without reaching the platter.
            return Err(eio());
        }
        for change in &pending {
            change.apply(&mut inode.synced);
        }
        Ok(())
    }
}

impl DiskFile for SimFile {
    fn write_all_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        let change = Change::Write {
            off,
            bytes: buf.to_vec(),
        };
        self.change(change, Some(Fault::Write))
    }

    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let st = self.state.lock();
        st.alive()?;
        let data = &st.inodes[self.ino].data;
        let off = off as usize;
        if off + buf.len() > data.len() {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        buf.copy_from_slice(&data[off..off + buf.len()]);
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        let st = self.state.lock();
        st.alive()?;
        Ok(st.inodes[self.ino].data.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.change(Change::SetLen(len), None)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(d: &SimDisk, p: &Path) -> Option<Vec<u8>> {
        let mut buf = Vec::new();
        d.read_to_end(p, &mut buf).ok().map(|()| buf)
    }

    #[test]
    fn a_power_cut_keeps_what_was_synced() {
        let d = SimDisk::new();
        let dir = Path::new("/d");
        d.create_dir_all(dir).unwrap();
        let a = dir.join("a");
        let f = d.create(&a).unwrap();
        f.write_all_at(b"synced", 0).unwrap();
        f.sync_data().unwrap();
        d.sync_dir(dir).unwrap();
        f.write_all_at(b" and not", 6).unwrap();
        assert_eq!(read(&d, &a).unwrap(), b"synced and not");
        d.power_cut(&mut Rng::new(7));
        let got = read(&d, &a).unwrap();
        assert!(got.starts_with(b"synced"));
        assert!(b"synced and not".starts_with(&got));
    }

    #[test]
    fn torn_writes_and_lost_directory_changes_both_happen() {
        let mut torn = false;
        let mut lost_file = false;
        for seed in 0..200 {
            let d = SimDisk::new();
            let dir = Path::new("/d");
            d.create_dir_all(dir).unwrap();
            let a = dir.join("a");
            let f = d.create(&a).unwrap();
            f.write_all_at(b"0123456789", 0).unwrap();
            d.power_cut(&mut Rng::new(seed));
            match read(&d, &a) {
                None => lost_file = true,
                Some(data) => {
                    assert!(b"0123456789".starts_with(&data));
                    torn |= !data.is_empty() && data.len() < 10;
                }
            }
        }
        assert!(torn && lost_file);
    }

    #[test]
    fn a_failed_sync_loses_the_data_even_after_a_later_good_sync() {
        let d = SimDisk::new();
        let dir = Path::new("/d");
        d.create_dir_all(dir).unwrap();
        let a = dir.join("a");
        let f = d.create(&a).unwrap();
        d.sync_dir(dir).unwrap();
        f.write_all_at(b"lost", 0).unwrap();
        d.inject(Fault::Sync, Some(&a));
        assert_eq!(f.sync_data().unwrap_err().raw_os_error(), Some(libc::EIO));
        assert_eq!(read(&d, &a).unwrap(), b"lost", "reads still see it");
        f.sync_data().unwrap();
        d.power_cut(&mut Rng::new(1));
        assert_eq!(read(&d, &a).unwrap(), b"");
    }

    #[test]
    fn after_the_planned_cut_everything_fails() {
        let d = SimDisk::new();
        let dir = Path::new("/d");
        d.create_dir_all(dir).unwrap();
        let f = d.create(&dir.join("a")).unwrap();
        d.cut_after(1);
        f.write_all_at(b"x", 0).unwrap();
        assert!(f.sync_data().is_err());
        assert!(d.is_dead());
        assert!(f.write_all_at(b"y", 1).is_err());
        assert!(d.list(dir).is_err());
        d.power_cut(&mut Rng::new(0));
        assert!(!d.is_dead());
        assert!(d.list(dir).is_ok());
    }
}

//! The image store on disk: image records, snapshots, leases, garbage collection and crash
//! recovery. Layout under `<root>/images`:
//!
//! ```text
//! lock                 flock: held while metadata changes (records, snapshots, leases)
//! generation           bumped on every change; other processes reload when it moves
//! content/             blobs by digest (content.rs)
//! meta/<hex>.json      one record per image id, written to a temporary name then renamed
//! snapshots/<n>/       committed layer: fs/ + chainid; container rootfs: fs/ (upper) + work/ +
//!                      active.json; still being written: only `lease` (the owner's lease file)
//! leases/<pid>-<seq>   work in progress; the owner holds an exclusive flock on it
//! tmp/                 import scratch space, `<pid>-<seq>`
//! ```
//!
//! Nothing is reference-counted: what is in use is recomputed from records, active snapshots and
//! live leases whenever something may have become garbage, as containerd's garbage collector
//! walks its metadata. That keeps every on-disk state a crash can leave consistent.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::{ImageError, ImageRecord, ImageStore, Rootfs};
use crate::content::Digest;
use crate::reference::Reference;

/// What a store has read from disk.
#[derive(Default)]
pub(super) struct State {
    /// The generation the rest was read at (`None`: never read).
    generation: Option<u64>,
    pub images: BTreeMap<String, ImageRecord>,
    /// Chain id → snapshot number of the committed layer.
    pub committed: HashMap<String, u64>,
    /// Container id → its active snapshot.
    pub active: HashMap<String, Active>,
}

/// A container's writable snapshot, as `active.json` records it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Active {
    pub container_id: String,
    pub image_id: String,
    /// This snapshot's number.
    pub number: u64,
    /// Layer snapshot numbers, top-most first.
    pub lowers: Vec<u64>,
}

/// What a pull or import in progress keeps from the garbage collector.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct LeaseContent {
    pub chains: BTreeSet<String>,
    pub blobs: BTreeSet<String>,
}

/// A lease file, exclusively flocked by its owner while it lives; removed on drop.
pub(super) struct Lease {
    pub name: String,
    path: PathBuf,
    _lock: Flock<File>,
    content: parking_lot::Mutex<LeaseContent>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

const LOCK: &str = "lock";
const GENERATION: &str = "generation";
const CHAINID: &str = "chainid";
const ACTIVE: &str = "active.json";
const LEASE_MARK: &str = "lease";

/// Writes `data` to `path` atomically (temporary file, fsync, rename).
pub(super) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), ImageError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| ImageError::io(path.display(), e))
}

fn read_generation(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join(GENERATION))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Resolves `image` against the records (see [`ImageStore::get`]).
pub(super) fn resolve<'a>(state: &'a State, image: &str) -> Option<&'a ImageRecord> {
    if let Some(r) = state.images.get(image) {
        return Some(r);
    }
    if let Ok(reference) = Reference::parse(image) {
        let name = reference.to_string();
        let found = state.images.values().find(|r| {
            r.repo_tags.contains(&name)
                || reference.digest.as_ref().is_some_and(|d| {
                    r.repo_digests
                        .contains(&format!("{}@{d}", reference.name()))
                        || (r.manifest_digest == *d
                            && r.repo_digests
                                .iter()
                                .any(|rd| rd.starts_with(&format!("{}@", reference.name()))))
                })
        });
        if found.is_some() {
            return found;
        }
    }
    // An id or a unique prefix of one.
    let hex = image.strip_prefix("sha256:").unwrap_or(image);
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut matches = state
        .images
        .values()
        .filter(|r| r.id["sha256:".len()..].starts_with(hex));
    let first = matches.next()?;
    matches.next().is_none().then_some(first)
}

impl ImageStore {
    fn meta_path(&self, id: &str) -> PathBuf {
        self.dir
            .join("meta")
            .join(format!("{}.json", id.trim_start_matches("sha256:")))
    }

    pub(super) fn snapshot_dir(&self, n: u64) -> PathBuf {
        self.dir.join("snapshots").join(n.to_string())
    }

    pub(super) fn rootfs_of(&self, n: u64, lowers: &[u64]) -> Rootfs {
        let dir = self.snapshot_dir(n);
        let mut lowerdirs: Vec<PathBuf> = lowers
            .iter()
            .map(|l| self.snapshot_dir(*l).join("fs"))
            .collect();
        if lowerdirs.is_empty() {
            // An image without layers: overlayfs still wants a lower directory.
            lowerdirs.push(dir.join("empty"));
        }
        Rootfs {
            lowerdirs,
            upper: dir.join("fs"),
            work: dir.join("work"),
        }
    }

    /// Takes the metadata lock (blocking: it is only held for short metadata updates).
    pub(super) fn lock(&self) -> Result<Flock<File>, ImageError> {
        let path = self.dir.join(LOCK);
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ImageError::io(path.display(), e))?;
        Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| ImageError::io(format!("locking {}", path.display()), e))
    }

    /// Records a change: bumps the generation on disk (call with the lock held) and marks this
    /// store as up to date with it when `state` was kept in step.
    fn bump(&self, state: &mut State) -> Result<(), ImageError> {
        let g = read_generation(&self.dir) + 1;
        write_atomic(&self.dir.join(GENERATION), g.to_string().as_bytes())?;
        state.generation = Some(g);
        Ok(())
    }

    /// Reloads records and snapshots if another process (or a restart) changed them.
    pub(super) fn refresh(&self) {
        let g = read_generation(&self.dir);
        if self.state.read().generation == Some(g) {
            return;
        }
        let mut state = self.state.write();
        if state.generation == Some(g) {
            return;
        }
        match self.load(g) {
            Ok(fresh) => *state = fresh,
            Err(e) => tracing::warn!(error = %e, "reloading the image store"),
        }
    }

    /// Reads records and snapshots from disk.
    fn load(&self, generation: u64) -> Result<State, ImageError> {
        let mut state = State {
            generation: Some(generation),
            ..State::default()
        };
        let meta = self.dir.join("meta");
        for e in std::fs::read_dir(&meta)
            .map_err(|e| ImageError::io(meta.display(), e))?
            .flatten()
        {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<ImageRecord>(&b).map_err(|e| e.to_string()))
            {
                Ok(r) => {
                    state.images.insert(r.id.clone(), r);
                }
                Err(e) => tracing::warn!(path = %p.display(), error = %e, "skipping image record"),
            }
        }
        let snaps = self.dir.join("snapshots");
        let mut max = 0;
        for e in std::fs::read_dir(&snaps)
            .map_err(|e| ImageError::io(snaps.display(), e))?
            .flatten()
        {
            let Some(n) = e.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            max = max.max(n);
            let dir = e.path();
            if let Ok(chain) = std::fs::read_to_string(dir.join(CHAINID)) {
                // Two processes may have unpacked one layer: the lowest number wins.
                let slot = state.committed.entry(chain.trim().to_string()).or_insert(n);
                *slot = (*slot).min(n);
            } else if let Ok(b) = std::fs::read(dir.join(ACTIVE)) {
                if let Ok(a) = serde_json::from_slice::<super::store::Active>(&b) {
                    state.active.insert(a.container_id.clone(), a);
                }
            }
        }
        self.seq.fetch_max(max + 1, Ordering::Relaxed);
        Ok(state)
    }

    /// At open: clean up what crashed processes left, then read everything.
    pub(super) fn recover(&self) -> Result<(), ImageError> {
        let _lock = self.lock()?;
        let live = self.live_leases()?;
        let live_names: HashSet<&str> = live.iter().map(|(n, _)| n.as_str()).collect();
        // Snapshots that were never finished and whose writer is gone.
        let snaps = self.dir.join("snapshots");
        for e in std::fs::read_dir(&snaps)
            .map_err(|e| ImageError::io(snaps.display(), e))?
            .flatten()
        {
            let dir = e.path();
            if dir.join(CHAINID).is_file() || dir.join(ACTIVE).is_file() {
                continue;
            }
            let owner = std::fs::read_to_string(dir.join(LEASE_MARK)).unwrap_or_default();
            if !live_names.contains(owner.trim()) {
                tracing::info!(path = %dir.display(), "removing a half-written snapshot");
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        // Temporary record files (written under the lock we hold, so none is in progress).
        let meta = self.dir.join("meta");
        for e in std::fs::read_dir(&meta)
            .map_err(|e| ImageError::io(meta.display(), e))?
            .flatten()
        {
            if e.path().extension().is_some_and(|x| x != "json") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        // Import scratch dirs of processes that are gone.
        let tmp = self.dir.join("tmp");
        for e in std::fs::read_dir(&tmp)
            .map_err(|e| ImageError::io(tmp.display(), e))?
            .flatten()
        {
            let pid = e
                .file_name()
                .to_str()
                .and_then(|s| s.split('-').next()?.parse::<i32>().ok());
            if pid.is_none_or(|p| !pid_alive(p)) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let g = read_generation(&self.dir);
        let fresh = self.load(g)?;
        *self.state.write() = fresh;
        Ok(())
    }

    /// Leases whose owner still holds them; stale lease files are removed.
    fn live_leases(&self) -> Result<Vec<(String, LeaseContent)>, ImageError> {
        let dir = self.dir.join("leases");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir)
            .map_err(|e| ImageError::io(dir.display(), e))?
            .flatten()
        {
            let path = e.path();
            let Ok(f) = File::open(&path) else { continue };
            match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                Ok(_unlocked_on_drop) => {
                    // Nobody holds it: its owner is gone.
                    let _ = std::fs::remove_file(&path);
                }
                Err(_) => {
                    let content = std::fs::read(&path)
                        .ok()
                        .and_then(|b| serde_json::from_slice(&b).ok())
                        .unwrap_or_default();
                    out.push((e.file_name().to_string_lossy().into_owned(), content));
                }
            }
        }
        Ok(out)
    }

    /// Starts a lease (a pull or an import in progress).
    pub(super) fn new_lease(&self) -> Result<Lease, ImageError> {
        let name = format!(
            "{}-{}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        );
        let path = self.dir.join("leases").join(&name);
        let f = File::create(&path).map_err(|e| ImageError::io(path.display(), e))?;
        let lock = Flock::lock(f, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| ImageError::io(format!("locking {}", path.display()), e))?;
        Ok(Lease {
            name,
            path,
            _lock: lock,
            content: parking_lot::Mutex::new(LeaseContent::default()),
        })
    }

    /// Adds chains and blobs to a lease (persisted under the metadata lock, so a collector in
    /// another process reads it whole).
    pub(super) fn extend_lease(
        &self,
        lease: &Lease,
        chains: impl IntoIterator<Item = String>,
        blobs: impl IntoIterator<Item = String>,
    ) -> Result<(), ImageError> {
        let _lock = self.lock()?;
        let mut c = lease.content.lock();
        c.chains.extend(chains);
        c.blobs.extend(blobs);
        let data = serde_json::to_vec(&*c).map_err(|e| ImageError::io("lease", e))?;
        // In place: the owner's flock is on this inode.
        std::fs::write(&lease.path, data).map_err(|e| ImageError::io(lease.path.display(), e))
    }

    /// Allocates a new snapshot directory `snapshots/<n>`, marked as owned by `lease`.
    fn alloc_snapshot(&self, lease_name: &str) -> Result<(u64, PathBuf), ImageError> {
        loop {
            let n = self.seq.fetch_add(1, Ordering::Relaxed);
            let dir = self.snapshot_dir(n);
            match std::fs::create_dir(&dir) {
                Ok(()) => {
                    std::fs::write(dir.join(LEASE_MARK), lease_name)
                        .map_err(|e| ImageError::io(dir.display(), e))?;
                    return Ok((n, dir));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(ImageError::io(dir.display(), e)),
            }
        }
    }

    /// The committed snapshot of a chain id, if there is one.
    pub(super) fn committed(&self, chain_id: &str) -> Option<u64> {
        let n = *self.state.read().committed.get(chain_id)?;
        self.snapshot_dir(n).join(CHAINID).is_file().then_some(n)
    }

    /// Unpacks one layer into a new snapshot for `chain_id` with `apply` (which gets the
    /// snapshot's `fs` path, not yet existing) unless that chain is already there.
    pub(super) fn commit_layer(
        &self,
        lease: &Lease,
        chain_id: &str,
        apply: impl FnOnce(&Path) -> Result<(), ImageError>,
    ) -> Result<u64, ImageError> {
        let lock = self
            .unpacking
            .lock()
            .entry(chain_id.to_string())
            .or_default()
            .clone();
        let _one_at_a_time = lock.lock();
        self.refresh();
        if let Some(n) = self.committed(chain_id) {
            return Ok(n);
        }
        let (n, dir) = {
            let _lock = self.lock()?;
            self.alloc_snapshot(&lease.name)?
        };
        let result = apply(&dir.join("fs"))
            .and_then(|()| write_atomic(&dir.join(CHAINID), chain_id.as_bytes()));
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        let _ = std::fs::remove_file(dir.join(LEASE_MARK));
        let _lock = self.lock()?;
        let mut state = self.state.write();
        state.committed.insert(chain_id.to_string(), n);
        let in_step = state.generation == Some(read_generation(&self.dir));
        self.bump(&mut state)?;
        if !in_step {
            state.generation = None; // someone else changed things too: reload next time
        }
        Ok(n)
    }

    /// Stores `record` under its id, merging names with an existing record of that id and
    /// taking its tags away from any other image (a tag names one image).
    pub(super) fn put_record(&self, mut record: ImageRecord) -> Result<ImageRecord, ImageError> {
        let _lock = self.lock()?;
        let fresh = self.load(read_generation(&self.dir))?;
        let mut state = self.state.write();
        *state = fresh;
        if let Some(old) = state.images.get(&record.id) {
            merge_names(&mut record.repo_tags, &old.repo_tags);
            merge_names(&mut record.repo_digests, &old.repo_digests);
            record.blobs.extend(old.blobs.iter().cloned());
            record.pinned |= old.pinned;
        }
        let mut emptied = Vec::new();
        for (id, other) in state.images.iter_mut() {
            if *id == record.id {
                continue;
            }
            let before = other.repo_tags.len();
            other.repo_tags.retain(|t| !record.repo_tags.contains(t));
            if other.repo_tags.len() != before {
                if other.repo_tags.is_empty() && other.repo_digests.is_empty() {
                    emptied.push(id.clone());
                } else {
                    write_atomic(&self.meta_path(id), &to_json(other)?)?;
                }
            }
        }
        write_atomic(&self.meta_path(&record.id), &to_json(&record)?)?;
        state.images.insert(record.id.clone(), record.clone());
        for id in &emptied {
            let _ = std::fs::remove_file(self.meta_path(id));
            state.images.remove(id);
        }
        self.bump(&mut state)?;
        drop(state);
        if !emptied.is_empty() {
            self.collect_garbage()?;
        }
        Ok(record)
    }

    /// Deletes an image record and collects what it alone kept.
    pub(super) fn remove_record(&self, id: &str) -> Result<(), ImageError> {
        let _lock = self.lock()?;
        let p = self.meta_path(id);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ImageError::io(p.display(), e)),
        }
        let mut state = self.state.write();
        state.images.remove(id);
        self.bump(&mut state)?;
        drop(state);
        self.collect_garbage()
    }

    /// Takes the lock and collects garbage.
    pub(super) fn collect_now(&self) -> Result<(), ImageError> {
        let _lock = self.lock()?;
        self.collect_garbage()
    }

    /// Removes snapshots and blobs nothing uses. Call with the metadata lock held.
    fn collect_garbage(&self) -> Result<(), ImageError> {
        let fresh = self.load(read_generation(&self.dir))?;
        let leases = self.live_leases()?;
        let mut keep_chains: HashSet<&str> = HashSet::new();
        let mut keep_blobs: HashSet<&str> = HashSet::new();
        for r in fresh.images.values() {
            keep_chains.extend(r.chain_ids.iter().map(String::as_str));
            keep_blobs.extend(r.blobs.iter().map(String::as_str));
        }
        for (_, l) in &leases {
            keep_chains.extend(l.chains.iter().map(String::as_str));
            keep_blobs.extend(l.blobs.iter().map(String::as_str));
        }
        let mut keep_snapshots: HashSet<u64> = HashSet::new();
        for a in fresh.active.values() {
            keep_snapshots.insert(a.number);
            keep_snapshots.extend(a.lowers.iter().copied());
        }
        for (chain, n) in &fresh.committed {
            if keep_chains.contains(chain.as_str()) {
                keep_snapshots.insert(*n);
            }
        }
        let snaps = self.dir.join("snapshots");
        for e in std::fs::read_dir(&snaps)
            .map_err(|e| ImageError::io(snaps.display(), e))?
            .flatten()
        {
            let Some(n) = e.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            let dir = e.path();
            let finished = dir.join(CHAINID).is_file() || dir.join(ACTIVE).is_file();
            if finished && !keep_snapshots.contains(&n) {
                tracing::debug!(snapshot = n, "removing an unused snapshot");
                std::fs::remove_dir_all(&dir).map_err(|e| ImageError::io(dir.display(), e))?;
            }
        }
        for d in self.content.list()? {
            if !keep_blobs.contains(d.as_str()) {
                self.content.delete(&d)?;
            }
        }
        let mut state = self.state.write();
        let g = read_generation(&self.dir);
        *state = self.load(g)?;
        Ok(())
    }

    /// Creates the active snapshot of a container over `record`'s layers.
    pub(super) fn create_active(
        &self,
        container_id: &str,
        record: &ImageRecord,
    ) -> Result<Rootfs, ImageError> {
        let _lock = self.lock()?;
        let fresh = self.load(read_generation(&self.dir))?;
        *self.state.write() = fresh;
        if self.state.read().active.contains_key(container_id) {
            return Err(ImageError::AlreadyExists(container_id.to_string()));
        }
        let mut lowers = Vec::new();
        for chain in record.chain_ids.iter().rev() {
            let n = self.committed(chain).ok_or_else(|| {
                ImageError::InvalidImage(format!(
                    "image {}: the snapshot of layer chain {chain} is missing; pull the image again",
                    record.id
                ))
            })?;
            lowers.push(n);
        }
        let (n, dir) = self.alloc_snapshot("active")?;
        let active = Active {
            container_id: container_id.to_string(),
            image_id: record.id.clone(),
            number: n,
            lowers,
        };
        let rootfs = self.rootfs_of(n, &active.lowers);
        let result = (|| {
            for d in [&rootfs.upper, &rootfs.work] {
                std::fs::create_dir(d).map_err(|e| ImageError::io(d.display(), e))?;
            }
            if active.lowers.is_empty() {
                let d = &rootfs.lowerdirs[0];
                std::fs::create_dir(d).map_err(|e| ImageError::io(d.display(), e))?;
            }
            write_atomic(&dir.join(ACTIVE), &to_json(&active)?)?;
            let _ = std::fs::remove_file(dir.join(LEASE_MARK));
            Ok(())
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        let mut state = self.state.write();
        state.active.insert(container_id.to_string(), active);
        self.bump(&mut state)?;
        Ok(rootfs)
    }

    /// Removes a container's active snapshot and collects layers nothing else uses.
    pub(super) fn remove_active(&self, container_id: &str) -> Result<(), ImageError> {
        let _lock = self.lock()?;
        let fresh = self.load(read_generation(&self.dir))?;
        let Some(active) = fresh.active.get(container_id).cloned() else {
            *self.state.write() = fresh;
            return Ok(());
        };
        let dir = self.snapshot_dir(active.number);
        // The marker first: a crash part-way leaves an unowned dir that recovery removes.
        std::fs::remove_file(dir.join(ACTIVE)).map_err(|e| ImageError::io(dir.display(), e))?;
        std::fs::remove_dir_all(&dir).map_err(|e| ImageError::io(dir.display(), e))?;
        let mut state = self.state.write();
        *state = fresh;
        state.active.remove(container_id);
        self.bump(&mut state)?;
        drop(state);
        self.collect_garbage()
    }
}

fn merge_names(into: &mut Vec<String>, from: &[String]) {
    for n in from {
        if !into.contains(n) {
            into.push(n.clone());
        }
    }
    into.sort();
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, ImageError> {
    serde_json::to_vec_pretty(v).map_err(|e| ImageError::io("encoding JSON", e))
}

/// Bytes (allocated blocks) and inodes under `dir`, hardlinks counted once.
pub(super) fn disk_usage(dir: &Path) -> Result<(u64, u64), ImageError> {
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut bytes = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if seen.insert((m.dev(), m.ino())) {
                bytes += m.blocks() * 512;
            }
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok((bytes, seen.len() as u64))
}

/// Whether a process with this pid exists.
pub(super) fn pid_alive(pid: i32) -> bool {
    pid > 0
        && (pid as u32 == std::process::id()
            || !matches!(
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
                Err(nix::errno::Errno::ESRCH)
            ))
}

/// The digest of a blob as a validated [`Digest`].
pub(super) fn digest(d: &str) -> Result<Digest, ImageError> {
    Digest::parse(d).map_err(ImageError::from)
}

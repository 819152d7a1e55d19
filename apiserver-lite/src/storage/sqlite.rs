//! The embedded store: SQLite (bundled) in WAL mode holding a revision log, one row per change,
//! like k3s' kine. A row's id is the global revision; the newest row of a key is its current
//! state; a delete writes a tombstone row. Compaction removes rows that history no longer needs.
//!
//! All writes go through one writer thread that group-commits: it takes every request waiting in
//! its queue (up to `MAX_BATCH`), applies them in one transaction, commits with
//! `synchronous=FULL` (one fsync of the WAL per group), and only then acknowledges them and
//! publishes their events to watchers. So an acknowledged write survives `kill -9` and power loss,
//! and watchers never see an uncommitted change. Compare-and-swap checks run against an in-memory
//! index of live keys that the writer thread alone owns, so a write costs no read. Keys written
//! with a TTL (etcd's leases) are deleted by the writer thread when they expire.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use super::{
    prefix_end, Event, EventKind, KeyValue, ListResult, Store, StoreError, StoreResult, WatchItem,
    WatchStream,
};

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 2048;
/// How often the background checkpointer runs.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kine (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    deleted INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    lease INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS kine_name_id ON kine (name, id);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
";

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

enum WriteOp {
    Create {
        key: String,
        value: Vec<u8>,
        ttl: i64,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: i64,
        ttl: i64,
    },
    Delete {
        key: String,
        expected: Option<i64>,
    },
    Compact(i64),
}

struct WriteRequest {
    op: WriteOp,
    reply: oneshot::Sender<StoreResult<KeyValue>>,
}

struct Subscriber {
    prefix: String,
    end: String,
    /// Events up to this revision were replayed from the log; live ones start after it.
    after: i64,
    tx: tokio::sync::mpsc::UnboundedSender<WatchItem>,
}

struct Shared {
    current: AtomicI64,
    compacted: AtomicI64,
    subscribers: Mutex<Vec<Subscriber>>,
    reader: Mutex<Connection>,
}

/// The SQLite-backed [`Store`].
pub struct SqliteStore {
    shared: Arc<Shared>,
    writer: Mutex<mpsc::Sender<WriteRequest>>,
}

/// The writer thread's view of a live key.
#[derive(Clone, Copy)]
struct Live {
    mod_revision: i64,
    create_revision: i64,
    ttl: i64,
    expires: i64,
}

fn open_connection(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open(path).map_err(backend)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(backend)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(backend)?;
    conn.busy_timeout(Duration::from_secs(30))
        .map_err(backend)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the store in the file `path`.
    pub fn open(path: &Path) -> StoreResult<Self> {
        let conn = open_connection(path)?;
        conn.execute_batch(SCHEMA).map_err(backend)?;
        // The revision is the newest row id, or the recorded one when compaction removed that
        // row: revisions never go back.
        let current: i64 = conn
            .query_row(
                "SELECT MAX(COALESCE((SELECT MAX(id) FROM kine), 0),
                            COALESCE((SELECT v FROM meta WHERE k = 'rev'), 0))",
                [],
                |r| r.get(0),
            )
            .map_err(backend)?;
        let compacted: i64 = conn
            .query_row("SELECT v FROM meta WHERE k = 'compact_rev'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(backend)?
            .unwrap_or(0);
        let mut live = HashMap::new();
        {
            let mut stmt = conn
                .prepare(
                    "SELECT name, id, create_revision, lease, expires FROM kine
                     WHERE id IN (SELECT MAX(id) FROM kine GROUP BY name) AND deleted = 0",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        Live {
                            mod_revision: r.get(1)?,
                            create_revision: r.get(2)?,
                            ttl: r.get(3)?,
                            expires: r.get(4)?,
                        },
                    ))
                })
                .map_err(backend)?;
            for row in rows {
                let (name, l) = row.map_err(backend)?;
                live.insert(name, l);
            }
        }
        let shared = Arc::new(Shared {
            current: AtomicI64::new(current),
            compacted: AtomicI64::new(compacted),
            subscribers: Mutex::new(Vec::new()),
            reader: Mutex::new(open_connection(path)?),
        });
        conn.pragma_update(None, "wal_autocheckpoint", 16384)
            .map_err(backend)?;
        let (tx, rx) = mpsc::channel();
        let leases = live
            .iter()
            .filter(|(_, l)| l.expires > 0)
            .map(|(k, l)| (l.expires, k.clone()))
            .collect();
        let writer = Writer {
            conn,
            index: Index {
                live,
                leases,
                revision: current,
                shared: shared.clone(),
            },
            rx,
        };
        // Checkpoints (copying the WAL back into the database file, with an fsync of its own) run
        // on their own connection and thread, so that the writer never stalls on one; the
        // writer's own auto-checkpoint only steps in if this one falls far behind.
        let checkpointer = open_connection(path)?;
        let alive = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while alive.upgrade().is_some() {
                    std::thread::sleep(CHECKPOINT_EVERY);
                    if let Err(e) =
                        checkpointer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "wal checkpoint failed");
                    }
                }
            })
            .map_err(backend)?;
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer.run())
            .map_err(backend)?;
        Ok(SqliteStore {
            shared,
            writer: Mutex::new(tx),
        })
    }

    async fn write(&self, op: WriteOp) -> StoreResult<KeyValue> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .lock()
            .send(WriteRequest { op, reply })
            .map_err(|_| backend("writer thread stopped"))?;
        rx.await.map_err(|_| backend("writer thread stopped"))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || f(&shared.reader.lock()))
            .await
            .map_err(backend)?
    }
}

fn row_kv(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue {
        key: r.get(0)?,
        mod_revision: r.get(1)?,
        create_revision: r.get(2)?,
        lease_ttl: r.get(3)?,
        value: r.get(4)?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn current_revision(&self) -> i64 {
        self.shared.current.load(Ordering::Acquire)
    }

    fn compacted_revision(&self) -> i64 {
        self.shared.compacted.load(Ordering::Acquire)
    }

    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>> {
        let key = key.to_string();
        self.read(move |c| {
            let row = c
                .query_row(
                    "SELECT name, id, create_revision, lease, value, deleted FROM kine
                     WHERE name = ?1 ORDER BY id DESC LIMIT 1",
                    params![key],
                    |r| Ok((row_kv(r)?, r.get::<_, i64>(5)?)),
                )
                .optional()
                .map_err(backend)?;
            Ok(row.and_then(|(kv, deleted)| (deleted == 0).then_some(kv)))
        })
        .await
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: i64,
    ) -> StoreResult<ListResult> {
        let current = self.current_revision();
        let compacted = self.compacted_revision();
        if revision > 0 && revision < compacted {
            return Err(StoreError::Compacted {
                requested: revision,
                compacted,
            });
        }
        if revision > current {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current,
            });
        }
        let at = if revision > 0 { revision } else { current };
        let start = match start_after {
            // Strictly after: append the lowest byte; never below the prefix.
            Some(s) => format!("{s}\u{0}").max(prefix.to_string()),
            None => prefix.to_string(),
        };
        let end = prefix_end(prefix);
        self.read(move |c| {
            let sql = "SELECT name, id, create_revision, lease, value FROM kine
                 WHERE id IN (SELECT MAX(id) FROM kine WHERE name >= ?1 AND name < ?2 AND id <= ?3
                              GROUP BY name)
                   AND deleted = 0 ORDER BY name";
            let mut stmt = c.prepare_cached(sql).map_err(backend)?;
            let mut rows = stmt.query(params![start, end, at]).map_err(backend)?;
            let mut out = ListResult {
                revision: at,
                ..Default::default()
            };
            while let Some(r) = rows.next().map_err(backend)? {
                if limit > 0 && out.kvs.len() == limit {
                    out.more = true;
                    out.remaining += 1;
                    continue;
                }
                out.kvs.push(row_kv(r).map_err(backend)?);
            }
            Ok(out)
        })
        .await
    }

    async fn count(&self, prefix: &str) -> StoreResult<i64> {
        let (start, end) = (prefix.to_string(), prefix_end(prefix));
        self.read(move |c| {
            c.query_row(
                "SELECT COUNT(*) FROM kine WHERE id IN (SELECT MAX(id) FROM kine
                 WHERE name >= ?1 AND name < ?2 GROUP BY name) AND deleted = 0",
                params![start, end],
                |r| r.get(0),
            )
            .map_err(backend)
        })
        .await
    }

    async fn create(&self, key: &str, value: Vec<u8>, ttl: i64) -> StoreResult<KeyValue> {
        self.write(WriteOp::Create {
            key: key.to_string(),
            value,
            ttl,
        })
        .await
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: i64,
        ttl: i64,
    ) -> StoreResult<KeyValue> {
        self.write(WriteOp::Update {
            key: key.to_string(),
            value,
            expected,
            ttl,
        })
        .await
    }

    async fn delete(&self, key: &str, expected: Option<i64>) -> StoreResult<KeyValue> {
        self.write(WriteOp::Delete {
            key: key.to_string(),
            expected,
        })
        .await
    }

    async fn watch(&self, prefix: &str, revision: i64) -> StoreResult<WatchStream> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let end = prefix_end(prefix);
        // Register first (so no live event is missed), then replay the log up to the revision
        // the registration was made at.
        let replay_to = {
            let mut subs = self.shared.subscribers.lock();
            let compacted = self.compacted_revision();
            if revision > 0 && revision < compacted {
                return Err(StoreError::Compacted {
                    requested: revision,
                    compacted,
                });
            }
            let current = self.current_revision();
            subs.push(Subscriber {
                prefix: prefix.to_string(),
                end: end.clone(),
                after: current,
                tx: tx.clone(),
            });
            current
        };
        if revision > 0 && revision < replay_to {
            let prefix = prefix.to_string();
            let history = self
                .read(move |c| {
                    let mut stmt = c
                        .prepare_cached(
                            "SELECT k.name, k.id, k.create_revision, k.lease, k.value, k.deleted,
                                    (SELECT p.value FROM kine p WHERE p.id = k.prev_revision)
                             FROM kine k WHERE k.id > ?1 AND k.id <= ?2
                               AND k.name >= ?3 AND k.name < ?4 ORDER BY k.id",
                        )
                        .map_err(backend)?;
                    let rows = stmt
                        .query_map(params![revision, replay_to, prefix, end], |r| {
                            let kv = row_kv(r)?;
                            let deleted: i64 = r.get(5)?;
                            let prev: Option<Vec<u8>> = r.get(6)?;
                            let kind = if deleted != 0 {
                                EventKind::Deleted
                            } else if kv.create_revision == kv.mod_revision {
                                EventKind::Created
                            } else {
                                EventKind::Modified
                            };
                            Ok(Event {
                                kind,
                                kv,
                                prev_value: prev,
                            })
                        })
                        .map_err(backend)?;
                    rows.collect::<Result<Vec<_>, _>>().map_err(backend)
                })
                .await?;
            // The replay goes first: prepend it by draining what arrived meanwhile.
            let (tx2, rx2) = tokio::sync::mpsc::unbounded_channel();
            for ev in history {
                let _ = tx2.send(WatchItem::Event(ev));
            }
            let live = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
            let replay = tokio_stream::wrappers::UnboundedReceiverStream::new(rx2);
            drop(tx2);
            return Ok(Box::pin(futures::StreamExt::chain(replay, live)));
        }
        Ok(Box::pin(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        ))
    }

    async fn compact(&self, revision: i64) -> StoreResult<()> {
        self.write(WriteOp::Compact(revision)).await.map(|_| ())
    }
}

struct Writer {
    conn: Connection,
    index: Index,
    rx: mpsc::Receiver<WriteRequest>,
}

/// The writer thread's in-memory index of live keys.
struct Index {
    live: HashMap<String, Live>,
    /// (expiry, key) of every live key written with a TTL.
    leases: BTreeSet<(i64, String)>,
    /// The last revision handed out (committed or in the open transaction).
    revision: i64,
    shared: Arc<Shared>,
}

/// An applied write waiting for the commit before it is acknowledged and published.
struct Applied {
    reply: Option<oneshot::Sender<StoreResult<KeyValue>>>,
    result: StoreResult<KeyValue>,
    event: Option<Event>,
}

impl Writer {
    fn run(mut self) {
        loop {
            let timeout = self.index.next_expiry_in();
            let first = match timeout {
                Some(t) => match self.rx.recv_timeout(t) {
                    Ok(r) => Some(r),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                },
                None => match self.rx.recv() {
                    Ok(r) => Some(r),
                    Err(_) => return,
                },
            };
            let mut batch: Vec<WriteRequest> = first.into_iter().collect();
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
    }

    fn commit(&mut self, batch: Vec<WriteRequest>) {
        let live_before: Vec<(String, Option<Live>)> = Vec::new();
        let mut undo = live_before;
        let mut applied: Vec<Applied> = Vec::with_capacity(batch.len() + 1);
        let batch_start = self.index.revision;
        let tx_ok = (|| -> rusqlite::Result<()> {
            let tx = self.conn.unchecked_transaction()?;
            for req in batch {
                let result = self.index.apply(&tx, req.op, &mut undo);
                let (result, event) = match result {
                    Ok((kv, ev)) => (Ok(kv), ev),
                    Err(ApplyError::Store(e)) => (Err(e), None),
                    Err(ApplyError::Sql(e)) => return Err(e),
                };
                applied.push(Applied {
                    reply: Some(req.reply),
                    result,
                    event,
                });
            }
            for (key, rev) in self.index.expired_keys() {
                let op = WriteOp::Delete {
                    key,
                    expected: Some(rev),
                };
                match self.index.apply(&tx, op, &mut undo) {
                    Ok((kv, ev)) => applied.push(Applied {
                        reply: None,
                        result: Ok(kv),
                        event: ev,
                    }),
                    Err(ApplyError::Sql(e)) => return Err(e),
                    Err(ApplyError::Store(_)) => {}
                }
            }
            tx.prepare_cached(
                "INSERT INTO meta (k, v) VALUES ('rev', ?1)
                 ON CONFLICT(k) DO UPDATE SET v = excluded.v",
            )?
            .execute(params![self.index.revision])?;
            tx.commit()
        })();
        if let Err(e) = tx_ok {
            // Roll the in-memory index back and fail every request of the group.
            self.index.revision = batch_start;
            for (key, before) in undo.into_iter().rev() {
                match before {
                    Some(l) => self.index.set_live(key, l),
                    None => self.index.remove_live(&key),
                };
            }
            for a in applied {
                if let Some(reply) = a.reply {
                    let _ = reply.send(Err(backend(&e)));
                }
            }
            tracing::error!(error = %e, "sqlite commit failed");
            return;
        }
        // Committed: publish to watchers, then acknowledge.
        let last = applied
            .iter()
            .filter_map(|a| a.event.as_ref().map(|e| e.kv.mod_revision))
            .max();
        {
            let mut subs = self.index.shared.subscribers.lock();
            if let Some(last) = last {
                self.index.shared.current.store(last, Ordering::Release);
            }
            let current = self.index.shared.current.load(Ordering::Acquire);
            subs.retain(|s| {
                for a in &applied {
                    if let Some(ev) = &a.event {
                        if ev.kv.mod_revision > s.after
                            && ev.kv.key >= s.prefix
                            && ev.kv.key < s.end
                            && s.tx.send(WatchItem::Event(ev.clone())).is_err()
                        {
                            return false;
                        }
                    }
                }
                last.is_none() || s.tx.send(WatchItem::Progress(current)).is_ok()
            });
        }
        for a in applied {
            if let Some(reply) = a.reply {
                let _ = reply.send(a.result);
            }
        }
    }
}

impl Index {
    /// Time until the earliest lease expires, if any key has one.
    fn next_expiry_in(&self) -> Option<Duration> {
        let earliest = self.leases.first()?.0;
        let wait = (earliest - now_secs()).max(0) as u64;
        Some(Duration::from_secs(wait).max(Duration::from_millis(100)))
    }

    fn expired_keys(&self) -> Vec<(String, i64)> {
        let now = now_secs();
        self.leases
            .iter()
            .take_while(|(exp, _)| *exp <= now)
            .filter_map(|(_, k)| self.live.get(k).map(|l| (k.clone(), l.mod_revision)))
            .collect()
    }

    fn apply(
        &mut self,
        tx: &rusqlite::Transaction<'_>,
        op: WriteOp,
        undo: &mut Vec<(String, Option<Live>)>,
    ) -> Result<(KeyValue, Option<Event>), ApplyError> {
        match op {
            WriteOp::Create { key, value, ttl } => {
                if self.live.contains_key(&key) {
                    return Err(StoreError::AlreadyExists { key }.into());
                }
                let expires = if ttl > 0 { now_secs() + ttl } else { 0 };
                // create_revision of a new incarnation is its own revision.
                let id = self.next_revision();
                insert(tx, id, &key, false, id, 0, ttl, expires, &value)?;
                undo.push((key.clone(), None));
                self.set_live(
                    key.clone(),
                    Live {
                        mod_revision: id,
                        create_revision: id,
                        ttl,
                        expires,
                    },
                );
                let kv = KeyValue {
                    key,
                    value,
                    create_revision: id,
                    mod_revision: id,
                    lease_ttl: ttl,
                };
                let ev = Event {
                    kind: EventKind::Created,
                    kv: kv.clone(),
                    prev_value: None,
                };
                Ok((kv, Some(ev)))
            }
            WriteOp::Update {
                key,
                value,
                expected,
                ttl,
            } => {
                let Some(cur) = self.live.get(&key).copied() else {
                    return Err(StoreError::NotFound { key }.into());
                };
                if cur.mod_revision != expected {
                    let current = self.read_kv(tx, &key, cur)?;
                    return Err(StoreError::Conflict {
                        key,
                        expected,
                        current: Some(Box::new(current)),
                    }
                    .into());
                }
                let prev_value = read_value(tx, cur.mod_revision)?;
                let expires = if ttl > 0 { now_secs() + ttl } else { 0 };
                let id = insert(
                    tx,
                    self.next_revision(),
                    &key,
                    false,
                    cur.create_revision,
                    cur.mod_revision,
                    ttl,
                    expires,
                    &value,
                )?;
                undo.push((key.clone(), Some(cur)));
                self.set_live(
                    key.clone(),
                    Live {
                        mod_revision: id,
                        create_revision: cur.create_revision,
                        ttl,
                        expires,
                    },
                );
                let kv = KeyValue {
                    key,
                    value,
                    create_revision: cur.create_revision,
                    mod_revision: id,
                    lease_ttl: ttl,
                };
                let ev = Event {
                    kind: EventKind::Modified,
                    kv: kv.clone(),
                    prev_value: Some(prev_value),
                };
                Ok((kv, Some(ev)))
            }
            WriteOp::Delete { key, expected } => {
                let Some(cur) = self.live.get(&key).copied() else {
                    return Err(StoreError::NotFound { key }.into());
                };
                if let Some(expected) = expected {
                    if cur.mod_revision != expected {
                        let current = self.read_kv(tx, &key, cur)?;
                        return Err(StoreError::Conflict {
                            key,
                            expected,
                            current: Some(Box::new(current)),
                        }
                        .into());
                    }
                }
                let value = read_value(tx, cur.mod_revision)?;
                let id = insert(
                    tx,
                    self.next_revision(),
                    &key,
                    true,
                    cur.create_revision,
                    cur.mod_revision,
                    0,
                    0,
                    &value,
                )?;
                undo.push((key.clone(), Some(cur)));
                self.remove_live(&key);
                let kv = KeyValue {
                    key,
                    value: value.clone(),
                    create_revision: cur.create_revision,
                    mod_revision: id,
                    lease_ttl: 0,
                };
                let ev = Event {
                    kind: EventKind::Deleted,
                    kv: kv.clone(),
                    prev_value: Some(value),
                };
                Ok((kv, Some(ev)))
            }
            WriteOp::Compact(revision) => {
                let compacted = self.shared.compacted.load(Ordering::Acquire);
                let current = self.shared.current.load(Ordering::Acquire);
                let revision = revision.min(current);
                if revision > compacted {
                    // Keep, as of `revision`, the newest row of every key; drop older rows and
                    // tombstones nobody can read any more.
                    tx.execute(
                        "DELETE FROM kine WHERE id <= ?1 AND id NOT IN
                           (SELECT MAX(id) FROM kine WHERE id <= ?1 GROUP BY name)",
                        params![revision],
                    )?;
                    tx.execute(
                        "DELETE FROM kine WHERE id <= ?1 AND deleted = 1",
                        params![revision],
                    )?;
                    tx.execute(
                        "INSERT INTO meta (k, v) VALUES ('compact_rev', ?1)
                         ON CONFLICT(k) DO UPDATE SET v = excluded.v",
                        params![revision],
                    )?;
                    self.shared.compacted.store(revision, Ordering::Release);
                }
                Ok((
                    KeyValue {
                        key: String::new(),
                        value: Vec::new(),
                        create_revision: 0,
                        mod_revision: revision,
                        lease_ttl: 0,
                    },
                    None,
                ))
            }
        }
    }

    fn next_revision(&mut self) -> i64 {
        self.revision += 1;
        self.revision
    }

    fn set_live(&mut self, key: String, l: Live) {
        self.remove_live(&key);
        if l.expires > 0 {
            self.leases.insert((l.expires, key.clone()));
        }
        self.live.insert(key, l);
    }

    fn remove_live(&mut self, key: &str) {
        if let Some(old) = self.live.remove(key) {
            if old.expires > 0 {
                self.leases.remove(&(old.expires, key.to_string()));
            }
        }
    }

    fn read_kv(
        &self,
        tx: &rusqlite::Transaction<'_>,
        key: &str,
        cur: Live,
    ) -> rusqlite::Result<KeyValue> {
        Ok(KeyValue {
            key: key.to_string(),
            value: read_value(tx, cur.mod_revision)?,
            create_revision: cur.create_revision,
            mod_revision: cur.mod_revision,
            lease_ttl: cur.ttl,
        })
    }
}

enum ApplyError {
    Store(StoreError),
    Sql(rusqlite::Error),
}

impl From<StoreError> for ApplyError {
    fn from(e: StoreError) -> Self {
        ApplyError::Store(e)
    }
}

impl From<rusqlite::Error> for ApplyError {
    fn from(e: rusqlite::Error) -> Self {
        ApplyError::Sql(e)
    }
}

fn read_value(tx: &rusqlite::Transaction<'_>, id: i64) -> rusqlite::Result<Vec<u8>> {
    tx.prepare_cached("SELECT value FROM kine WHERE id = ?1")?
        .query_row(params![id], |r| r.get(0))
}

#[allow(clippy::too_many_arguments)]
fn insert(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    key: &str,
    deleted: bool,
    create_revision: i64,
    prev_revision: i64,
    ttl: i64,
    expires: i64,
    value: &[u8],
) -> rusqlite::Result<i64> {
    tx.prepare_cached(
        "INSERT INTO kine (id, name, deleted, create_revision, prev_revision, lease, expires, value)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        id,
        key,
        deleted as i64,
        create_revision,
        prev_revision,
        ttl,
        expires,
        value
    ])?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{guaranteed_update, UpdateDecision};
    use futures::StreamExt;

    fn open() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn create_get_update_delete_with_preconditions() {
        let (_d, s) = open();
        let a = s.create("/r/a", b"1".to_vec(), 0).await.unwrap();
        assert_eq!(a.mod_revision, 1);
        assert_eq!(a.create_revision, 1);
        assert!(matches!(
            s.create("/r/a", b"x".to_vec(), 0).await,
            Err(StoreError::AlreadyExists { .. })
        ));
        let b = s.update("/r/a", b"2".to_vec(), 1, 0).await.unwrap();
        assert_eq!((b.mod_revision, b.create_revision), (2, 1));
        match s.update("/r/a", b"3".to_vec(), 1, 0).await {
            Err(StoreError::Conflict { current, .. }) => {
                assert_eq!(current.unwrap().value, b"2".to_vec())
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert!(matches!(
            s.delete("/r/a", Some(1)).await,
            Err(StoreError::Conflict { .. })
        ));
        let d = s.delete("/r/a", Some(2)).await.unwrap();
        assert_eq!((d.mod_revision, d.value.as_slice()), (3, &b"2"[..]));
        assert_eq!(s.get("/r/a").await.unwrap(), None);
        assert_eq!(s.current_revision(), 3);
        // A new incarnation gets a new create revision.
        let again = s.create("/r/a", b"4".to_vec(), 0).await.unwrap();
        assert_eq!(again.create_revision, 4);
    }

    #[tokio::test]
    async fn list_pages_and_reads_the_past() {
        let (_d, s) = open();
        for k in ["c", "a", "b", "d"] {
            s.create(&format!("/r/{k}"), k.as_bytes().to_vec(), 0)
                .await
                .unwrap();
        }
        s.create("/other/x", b"x".to_vec(), 0).await.unwrap();
        let page = s.list("/r/", None, 2, 0).await.unwrap();
        let keys: Vec<_> = page.kvs.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(keys, ["/r/a", "/r/b"]);
        assert!(page.more);
        assert_eq!(page.remaining, 2);
        let next = s.list("/r/", Some("/r/b"), 2, page.revision).await.unwrap();
        let keys: Vec<_> = next.kvs.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(keys, ["/r/c", "/r/d"]);
        assert!(!next.more);
        s.delete("/r/a", None).await.unwrap();
        assert_eq!(s.list("/r/", None, 0, 0).await.unwrap().kvs.len(), 3);
        // At the old revision the deleted key is still there.
        assert_eq!(s.list("/r/", None, 0, 5).await.unwrap().kvs.len(), 4);
        assert_eq!(s.count("/r/").await.unwrap(), 3);
        assert!(matches!(
            s.list("/r/", None, 0, 99).await,
            Err(StoreError::FutureRevision { .. })
        ));
    }

    #[tokio::test]
    async fn watch_replays_history_then_follows_live() {
        let (_d, s) = open();
        s.create("/r/a", b"1".to_vec(), 0).await.unwrap();
        s.update("/r/a", b"2".to_vec(), 1, 0).await.unwrap();
        s.create("/x/b", b"1".to_vec(), 0).await.unwrap();
        let mut w = s.watch("/r/", 1).await.unwrap();
        s.delete("/r/a", None).await.unwrap();
        let mut events = Vec::new();
        while events.len() < 2 {
            match tokio::time::timeout(Duration::from_secs(5), w.next()).await {
                Ok(Some(WatchItem::Event(e))) => events.push(e),
                Ok(Some(WatchItem::Progress(_))) => {}
                other => panic!("watch ended early: {other:?}"),
            }
        }
        assert_eq!(events[0].kind, EventKind::Modified);
        assert_eq!(events[0].prev_value.as_deref(), Some(&b"1"[..]));
        assert_eq!(events[1].kind, EventKind::Deleted);
        assert_eq!(events[1].kv.mod_revision, 4);
    }

    #[tokio::test]
    async fn compaction_drops_history() {
        let (_d, s) = open();
        s.create("/r/a", b"1".to_vec(), 0).await.unwrap();
        s.update("/r/a", b"2".to_vec(), 1, 0).await.unwrap();
        s.create("/r/b", b"1".to_vec(), 0).await.unwrap();
        s.delete("/r/b", None).await.unwrap();
        s.compact(3).await.unwrap();
        assert_eq!(s.compacted_revision(), 3);
        assert!(matches!(
            s.watch("/r/", 1).await.err(),
            Some(StoreError::Compacted { .. })
        ));
        assert!(matches!(
            s.list("/r/", None, 0, 2).await,
            Err(StoreError::Compacted { .. })
        ));
        let now = s.list("/r/", None, 0, 0).await.unwrap();
        assert_eq!(now.kvs.len(), 1);
        assert_eq!(now.kvs[0].value, b"2".to_vec());
    }

    #[tokio::test]
    async fn guaranteed_update_retries_on_conflict() {
        let (_d, s) = open();
        s.create("/r/n", b"0".to_vec(), 0).await.unwrap();
        let mut tries = 0;
        let kv = guaranteed_update::<StoreError, _>(&s, "/r/n", |cur| {
            tries += 1;
            if tries == 1 {
                // Someone else writes between our read and our write.
                let rev = cur.unwrap().mod_revision;
                let s2 = &s;
                futures::executor::block_on(async {
                    s2.update("/r/n", b"5".to_vec(), rev, 0).await.unwrap();
                });
            }
            let n: i64 = String::from_utf8_lossy(&cur.unwrap().value)
                .parse()
                .unwrap();
            Ok(UpdateDecision::Write((n + 1).to_string().into_bytes(), 0))
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(tries, 2);
        assert_eq!(kv.value, b"6".to_vec());
    }

    #[tokio::test]
    async fn leases_expire_and_state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let s = SqliteStore::open(&path).unwrap();
            s.create("/ev/a", b"1".to_vec(), 1).await.unwrap();
            s.create("/keep/b", b"1".to_vec(), 0).await.unwrap();
            let mut w = s.watch("/ev/", 0).await.unwrap();
            let ev = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    if let Some(WatchItem::Event(e)) = w.next().await {
                        return e;
                    }
                }
            })
            .await
            .expect("the leased key expires");
            assert_eq!(ev.kind, EventKind::Deleted);
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.current_revision(), 3);
        assert!(s.get("/keep/b").await.unwrap().is_some());
        assert!(s.get("/ev/a").await.unwrap().is_none());
        assert_eq!(
            s.create("/keep/c", vec![], 0).await.unwrap().mod_revision,
            4
        );
    }

    #[tokio::test]
    async fn revisions_never_go_back_even_when_compaction_empties_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let s = SqliteStore::open(&path).unwrap();
            s.create("/r/a", b"1".to_vec(), 0).await.unwrap();
            s.delete("/r/a", None).await.unwrap();
            s.compact(2).await.unwrap();
            assert_eq!(s.list("/r/", None, 0, 0).await.unwrap().kvs.len(), 0);
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.current_revision(), 2);
        assert_eq!(s.create("/r/a", vec![], 0).await.unwrap().mod_revision, 3);
    }
}

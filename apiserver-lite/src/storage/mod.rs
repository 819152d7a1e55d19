//! The storage seam, shaped like Kubernetes' `storage.Interface` over etcd v3: keys are strings
//! (`/registry/pods/<ns>/<name>`), values are opaque bytes, and every change gets a global,
//! monotonic revision that becomes the object's resourceVersion.
//!
//! Each method maps one to one onto etcd v3: `create` is a transaction "create_revision == 0 then
//! put", `update`/`delete` with a precondition are "mod_revision == N then put/delete", `list` is a
//! range read (optionally at a past revision), `watch` is an etcd watch from a revision, `compact`
//! is compaction, and a TTL is a lease. The SQLite backend (`sqlite`) is the embedded default; an
//! etcd backend comes later behind the same trait.

pub mod sqlite;

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;

/// A stored key with its revisions, as etcd's `mvccpb.KeyValue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the create that started this incarnation of the key.
    pub create_revision: i64,
    /// Revision of the last change (the resourceVersion).
    pub mod_revision: i64,
    /// TTL in seconds the key was written with (0 = none).
    pub lease_ttl: i64,
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Modified,
    Deleted,
}

/// One change seen by a watch. For `Deleted`, `kv.value` is the last value and
/// `kv.mod_revision` the revision of the delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    /// The value before this change (None for `Created`).
    pub prev_value: Option<Vec<u8>>,
}

/// An item of a watch stream: an event, or a progress notification saying that every change up
/// to `revision` has been delivered (etcd's progress notify; it lets idle caches advance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    Event(Event),
    Progress(i64),
}

pub type WatchStream = Pin<Box<dyn Stream<Item = WatchItem> + Send>>;

/// Result of a range read.
#[derive(Debug, Clone, Default)]
pub struct ListResult {
    pub kvs: Vec<KeyValue>,
    /// The revision the list was read at.
    pub revision: i64,
    /// Whether keys remain after the last returned one.
    pub more: bool,
    /// How many keys remain after the last returned one.
    pub remaining: i64,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("key {key} already exists")]
    AlreadyExists { key: String },
    #[error("key {key} not found")]
    NotFound { key: String },
    /// The precondition revision did not match; `current` is what is stored now.
    #[error("key {key} was modified: expected revision {expected}")]
    Conflict {
        key: String,
        expected: i64,
        current: Option<Box<KeyValue>>,
    },
    #[error("revision {requested} has been compacted (compacted at {compacted})")]
    Compacted { requested: i64, compacted: i64 },
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision { requested: i64, current: i64 },
    #[error("storage backend failed: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Kubernetes' storage.Interface, reduced to what maps onto etcd v3.
#[async_trait]
pub trait Store: Send + Sync {
    /// The latest revision committed and published to watchers.
    fn current_revision(&self) -> i64;

    /// The oldest revision that can still be read or watched from.
    fn compacted_revision(&self) -> i64;

    async fn get(&self, key: &str) -> StoreResult<Option<KeyValue>>;

    /// Keys with `prefix`, in key order, starting after `start_after`, at most `limit` (0 = all),
    /// at `revision` (0 = latest).
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        revision: i64,
    ) -> StoreResult<ListResult>;

    async fn count(&self, prefix: &str) -> StoreResult<i64>;

    /// Creates the key; fails with `AlreadyExists` if it is present. `ttl` > 0 attaches a lease.
    async fn create(&self, key: &str, value: Vec<u8>, ttl: i64) -> StoreResult<KeyValue>;

    /// Replaces the value if the key's mod revision is `expected` (compare-and-swap).
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: i64,
        ttl: i64,
    ) -> StoreResult<KeyValue>;

    /// Deletes the key, if `expected` is given only when its mod revision matches. Returns the
    /// deleted value with the delete's revision as `mod_revision`.
    async fn delete(&self, key: &str, expected: Option<i64>) -> StoreResult<KeyValue>;

    /// Changes to keys with `prefix` after `revision` (0 = from now on). Fails with `Compacted`
    /// if the history is gone. The stream also carries progress notifications.
    async fn watch(&self, prefix: &str, revision: i64) -> StoreResult<WatchStream>;

    /// Drops history older than `revision`.
    async fn compact(&self, revision: i64) -> StoreResult<()>;
}

/// What a guaranteed-update closure decides.
pub enum UpdateDecision {
    /// Write this value (with this TTL).
    Write(Vec<u8>, i64),
    /// Leave the key as it is.
    Keep,
    /// Delete the key (with the read revision as precondition).
    Delete,
}

/// Read-modify-write retried on revision conflict, as `GuaranteedUpdate`: `f` sees the current
/// value (None if the key is absent) and decides; on a conflict the key is read again and `f`
/// runs again. Returns the stored key value after the write (or as read, for `Keep`).
pub async fn guaranteed_update<E, F>(
    store: &dyn Store,
    key: &str,
    mut f: F,
) -> Result<Option<KeyValue>, E>
where
    F: FnMut(Option<&KeyValue>) -> Result<UpdateDecision, E>,
    E: From<StoreError>,
{
    let mut current = store.get(key).await?;
    loop {
        let decision = f(current.as_ref())?;
        let result = match (decision, &current) {
            (UpdateDecision::Keep, _) => return Ok(current),
            (UpdateDecision::Write(value, ttl), None) => {
                store.create(key, value, ttl).await.map(Some)
            }
            (UpdateDecision::Write(value, ttl), Some(kv)) => store
                .update(key, value, kv.mod_revision, ttl)
                .await
                .map(Some),
            (UpdateDecision::Delete, None) => {
                return Err(StoreError::NotFound {
                    key: key.to_string(),
                }
                .into())
            }
            (UpdateDecision::Delete, Some(kv)) => {
                store.delete(key, Some(kv.mod_revision)).await.map(|_| None)
            }
        };
        match result {
            Ok(kv) => return Ok(kv),
            Err(StoreError::Conflict { current: now, .. }) => current = now.map(|b| *b),
            Err(StoreError::AlreadyExists { .. }) => current = store.get(key).await?,
            Err(StoreError::NotFound { .. }) => current = None,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The first key after every key with `prefix` (etcd's range end for a prefix).
pub fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0x7f {
            bytes.push(last + 1);
            return String::from_utf8(bytes).unwrap_or_default();
        }
    }
    // Every byte was at the top of the ASCII range: no upper bound; keys are ASCII here.
    "\u{7f}".repeat(prefix.len() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_bumps_the_last_byte() {
        assert_eq!(prefix_end("/registry/pods/"), "/registry/pods0");
        assert_eq!(prefix_end("a"), "b");
    }
}

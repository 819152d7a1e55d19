//! Controller expectations: upstream's `ControllerExpectations` and
//! `UIDTrackingControllerExpectations` (`pkg/controller/controller_utils.go`).
//!
//! A controller that creates or deletes pods records how many adds and deletes it expects to see
//! in its informer for one controller key; the informer's event handlers lower the counts. Until
//! they reach zero (or the record is older than five minutes, upstream's `ExpectationsTimeout`),
//! the controller does not act on that key again, so a watch that lags behind the controller's own
//! writes never makes it create or delete twice.
//!
//! [`UidTrackingExpectations`] also remembers which pods (by key) a deletion is expected for, so
//! that a pod seen deleted twice (a graceful delete, then the final one) lowers the count once.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// After this long an unmet expectation no longer blocks the controller (upstream's
/// `ExpectationsTimeout`).
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Clone)]
struct Expectation {
    add: i64,
    del: i64,
    at: Instant,
}

impl Expectation {
    fn fulfilled(&self) -> bool {
        self.add <= 0 && self.del <= 0
    }
}

/// Expected adds and deletes per controller key.
#[derive(Debug, Default)]
pub struct Expectations {
    map: Mutex<HashMap<String, Expectation>>,
}

impl Expectations {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the controller may sync `key`: no record, a fulfilled one, or an expired one.
    pub fn satisfied(&self, key: &str) -> bool {
        match self.map.lock().get(key) {
            None => true,
            Some(e) => e.fulfilled() || e.at.elapsed() > EXPECTATIONS_TIMEOUT,
        }
    }

    /// Records that `adds` creations and `dels` deletions are about to be made (replacing any
    /// earlier record, as upstream's `SetExpectations`).
    pub fn set(&self, key: &str, adds: i64, dels: i64) {
        self.map.lock().insert(
            key.to_string(),
            Expectation {
                add: adds,
                del: dels,
                at: Instant::now(),
            },
        );
    }

    pub fn expect_creations(&self, key: &str, adds: usize) {
        self.set(key, adds as i64, 0)
    }

    pub fn expect_deletions(&self, key: &str, dels: usize) {
        self.set(key, 0, dels as i64)
    }

    /// One expected creation was seen (or will never happen: a create that failed).
    pub fn creation_observed(&self, key: &str) {
        self.lower(key, 1, 0)
    }

    /// One expected deletion was seen (or will never happen).
    pub fn deletion_observed(&self, key: &str) {
        self.lower(key, 0, 1)
    }

    /// Lowers the counts of `key`'s record, if any.
    pub fn lower(&self, key: &str, adds: i64, dels: i64) {
        if let Some(e) = self.map.lock().get_mut(key) {
            e.add -= adds;
            e.del -= dels;
        }
    }

    /// Forgets `key` (its controller was deleted).
    pub fn delete(&self, key: &str) {
        self.map.lock().remove(key);
    }

    /// The outstanding (adds, deletes) of `key`.
    pub fn get(&self, key: &str) -> Option<(i64, i64)> {
        self.map.lock().get(key).map(|e| (e.add, e.del))
    }
}

/// [`Expectations`] that also track which pods a deletion is expected for.
#[derive(Debug, Default)]
pub struct UidTrackingExpectations {
    counts: Expectations,
    deleting: Mutex<HashMap<String, HashSet<String>>>,
}

impl UidTrackingExpectations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn satisfied(&self, key: &str) -> bool {
        self.counts.satisfied(key)
    }

    pub fn expect_creations(&self, key: &str, adds: usize) {
        self.counts.expect_creations(key, adds)
    }

    pub fn creation_observed(&self, key: &str) {
        self.counts.creation_observed(key)
    }

    /// Records that the pods `pod_keys` are about to be deleted.
    pub fn expect_deletions(&self, key: &str, pod_keys: &[String]) {
        let mut deleting = self.deleting.lock();
        let set = deleting.entry(key.to_string()).or_default();
        if !set.is_empty() {
            tracing::warn!(
                "{key}: expecting deletions while {} are still pending",
                set.len()
            );
        }
        set.extend(pod_keys.iter().cloned());
        self.counts.expect_deletions(key, pod_keys.len());
    }

    /// Records `adds` creations and the deletions of `pod_keys` made in one sync (upstream's
    /// `SetExpectations` with both counts, as the DaemonSet controller's `syncNodes` does).
    pub fn expect_creations_and_deletions(&self, key: &str, adds: usize, pod_keys: &[String]) {
        let mut deleting = self.deleting.lock();
        deleting
            .entry(key.to_string())
            .or_default()
            .extend(pod_keys.iter().cloned());
        self.counts.set(key, adds as i64, pod_keys.len() as i64);
    }

    /// The deletion of `pod_key` was seen (or will never happen); counted once per pod.
    pub fn deletion_observed(&self, key: &str, pod_key: &str) {
        let mut deleting = self.deleting.lock();
        if let Some(set) = deleting.get_mut(key) {
            if set.remove(pod_key) {
                self.counts.deletion_observed(key);
            }
        }
    }

    /// Forgets `key` (its controller was deleted).
    pub fn delete(&self, key: &str) {
        self.deleting.lock().remove(key);
        self.counts.delete(key);
    }

    pub fn get(&self, key: &str) -> Option<(i64, i64)> {
        self.counts.get(key)
    }

    /// Lowers the outstanding creations after creates that failed or were skipped.
    pub fn lower_creations(&self, key: &str, n: usize) {
        self.counts.lower(key, n as i64, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_blocked_until_every_expected_add_and_delete_is_seen() {
        let e = Expectations::new();
        assert!(e.satisfied("ns/rs"));
        e.expect_creations("ns/rs", 2);
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        assert!(e.satisfied("ns/rs"));
        e.expect_deletions("ns/rs", 1);
        assert!(!e.satisfied("ns/rs"));
        e.deletion_observed("ns/rs");
        assert!(e.satisfied("ns/rs"));
        e.delete("ns/rs");
        assert_eq!(e.get("ns/rs"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unmet_expectation_expires_after_five_minutes() {
        let e = Expectations::new();
        e.expect_creations("k", 3);
        tokio::time::advance(Duration::from_secs(299)).await;
        assert!(!e.satisfied("k"));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(e.satisfied("k"));
    }

    #[test]
    fn a_pod_seen_deleted_twice_counts_once() {
        let e = UidTrackingExpectations::new();
        e.expect_deletions("k", &["ns/a".into(), "ns/b".into()]);
        e.deletion_observed("k", "ns/a");
        e.deletion_observed("k", "ns/a");
        assert!(!e.satisfied("k"));
        e.deletion_observed("k", "ns/b");
        assert!(e.satisfied("k"));
    }
}

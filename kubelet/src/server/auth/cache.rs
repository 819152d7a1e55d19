//! The decision cache of the kubelet's webhooks (upstream's `cache.NewCachedTokenAuthenticator`
//! and the webhook authorizer's LRU): an answer is reused until its time-to-live passes, so a
//! burst of requests from one client costs one TokenReview or SubjectAccessReview. Keys are
//! strings the caller derives (a token's SHA-256, a review's serialized spec); the map is
//! bounded, expired entries are dropped when it fills.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Entries kept at most (upstream's authorizer LRU holds 8192, its token cache more).
const MAX_ENTRIES: usize = 8192;

/// Answers with an expiry.
pub struct TtlCache<V> {
    entries: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> Default for TtlCache<V> {
    fn default() -> Self {
        TtlCache {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<V: Clone> TtlCache<V> {
    /// The answer for `key` if it has not expired.
    pub fn get(&self, key: &str) -> Option<V> {
        let entries = self.entries.lock();
        entries
            .get(key)
            .filter(|(expires, _)| *expires > Instant::now())
            .map(|(_, v)| v.clone())
    }

    /// Keeps `value` for `ttl` (a zero TTL keeps nothing).
    pub fn insert(&self, key: String, value: V, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (expires, _)| *expires > now);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (now + ttl, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_live_for_their_ttl() {
        let c = TtlCache::default();
        c.insert("a".into(), true, Duration::from_secs(60));
        c.insert("b".into(), false, Duration::from_nanos(1));
        c.insert("z".into(), false, Duration::ZERO);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(c.get("a"), Some(true));
        assert_eq!(c.get("b"), None, "expired");
        assert_eq!(c.get("z"), None, "a zero TTL is not cached");
    }
}

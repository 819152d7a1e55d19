//! The controllers' work queue: client-go's `workqueue.TypedRateLimitingInterface`.
//!
//! Event handlers only [`WorkQueue::add`] a key; workers [`WorkQueue::get`] keys and sync them.
//! The semantics are client-go's, which controllers depend on:
//! - a key is queued at most once however often it is added (de-duplication: the "dirty" set);
//! - a key is never handed to two workers at once: added while being processed, it is queued
//!   again only when the worker calls [`WorkQueue::done`];
//! - [`WorkQueue::add_after`] delays an add (the earliest pending time wins);
//! - [`WorkQueue::add_rate_limited`] delays by the rate limiter: per key, exponential from 5 ms
//!   doubling to 1000 s, and overall a token bucket of 10 per second with a burst of 100
//!   (client-go's `DefaultTypedControllerRateLimiter`, the slower of the two wins);
//!   [`WorkQueue::forget`] ends a key's back-off after a successful sync.
//!
//! [`run_workers`] is the usual worker loop (`processNextWorkItem`): get, sync, forget or
//! re-queue with back-off, done.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::fmt::Display;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What a queue key needs to be.
pub trait Key: Clone + Eq + Hash + Send + Sync + 'static {}
impl<T: Clone + Eq + Hash + Send + Sync + 'static> Key for T {}

/// Per-key exponential back-off (client-go's `ItemExponentialFailureRateLimiter`).
#[derive(Debug, Clone)]
pub struct ExponentialBackoff {
    pub base: Duration,
    pub max: Duration,
}

/// An overall token bucket (client-go's `BucketRateLimiter`).
#[derive(Debug, Clone)]
pub struct Bucket {
    pub qps: f64,
    pub burst: u32,
}

/// The rate limiter behind [`WorkQueue::add_rate_limited`]: the larger delay of the two.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    pub per_item: ExponentialBackoff,
    pub overall: Option<Bucket>,
}

impl Default for RateLimiter {
    /// client-go's `DefaultTypedControllerRateLimiter`: 5 ms .. 1000 s per key, 10 qps / burst 100.
    fn default() -> Self {
        RateLimiter {
            per_item: ExponentialBackoff {
                base: Duration::from_millis(5),
                max: Duration::from_secs(1000),
            },
            overall: Some(Bucket {
                qps: 10.0,
                burst: 100,
            }),
        }
    }
}

struct State<K> {
    queue: VecDeque<K>,
    dirty: HashSet<K>,
    processing: HashSet<K>,
    /// Keys waiting for `add_after`, with the time they are due.
    waiting: HashMap<K, Instant>,
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    heap_keys: HashMap<u64, K>,
    seq: u64,
    failures: HashMap<K, u32>,
    /// Token bucket: tokens available at `bucket_at`.
    tokens: f64,
    bucket_at: Instant,
    shutting_down: bool,
}

struct Inner<K> {
    name: String,
    limiter: RateLimiter,
    state: Mutex<State<K>>,
    /// Wakes workers blocked in `get`.
    ready: Notify,
    /// Wakes the delay task when an earlier deadline arrives, or the queue shuts down or is
    /// dropped.
    timer: Arc<Notify>,
}

impl<K> Drop for Inner<K> {
    fn drop(&mut self) {
        self.timer.notify_one();
    }
}

/// A rate-limited, de-duplicating work queue; cheap to clone (all clones are one queue).
pub struct WorkQueue<K: Key> {
    inner: Arc<Inner<K>>,
}

impl<K: Key> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        WorkQueue {
            inner: self.inner.clone(),
        }
    }
}

impl<K: Key> WorkQueue<K> {
    /// A queue with client-go's default controller rate limiter. Must be called inside a tokio
    /// runtime (a task serves delayed adds).
    pub fn new(name: &str) -> Self {
        Self::with_rate_limiter(name, RateLimiter::default())
    }

    /// A queue with the given rate limiter.
    pub fn with_rate_limiter(name: &str, limiter: RateLimiter) -> Self {
        let burst = limiter.overall.as_ref().map_or(0.0, |b| f64::from(b.burst));
        let inner = Arc::new(Inner {
            name: name.to_string(),
            limiter,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                waiting: HashMap::new(),
                heap: BinaryHeap::new(),
                heap_keys: HashMap::new(),
                seq: 0,
                failures: HashMap::new(),
                tokens: burst,
                bucket_at: Instant::now(),
                shutting_down: false,
            }),
            ready: Notify::new(),
            timer: Arc::new(Notify::new()),
        });
        tokio::spawn(delay_loop(Arc::downgrade(&inner), inner.timer.clone()));
        WorkQueue { inner }
    }

    /// The queue's name (for logs).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Queues `key` unless it is queued already (or, while it is being processed, once it is done).
    pub fn add(&self, key: K) {
        let mut s = self.inner.state.lock();
        if s.shutting_down || s.dirty.contains(&key) {
            return;
        }
        s.dirty.insert(key.clone());
        if s.processing.contains(&key) {
            return;
        }
        s.queue.push_back(key);
        drop(s);
        self.inner.ready.notify_one();
    }

    /// Queues `key` after `delay`; an earlier pending delay for the same key wins.
    pub fn add_after(&self, key: K, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let due = Instant::now() + delay;
        let mut s = self.inner.state.lock();
        if s.shutting_down {
            return;
        }
        if let Some(&at) = s.waiting.get(&key) {
            if at <= due {
                return;
            }
        }
        s.waiting.insert(key.clone(), due);
        s.seq += 1;
        let seq = s.seq;
        s.heap.push(Reverse((due, seq)));
        s.heap_keys.insert(seq, key);
        drop(s);
        self.inner.timer.notify_one();
    }

    /// Queues `key` after the rate limiter's delay for it (and counts a failure).
    pub fn add_rate_limited(&self, key: K) {
        let delay = self.when(&key);
        self.add_after(key, delay);
    }

    /// The rate limiter's next delay for `key`.
    fn when(&self, key: &K) -> Duration {
        let limiter = &self.inner.limiter;
        let mut s = self.inner.state.lock();
        let n = s.failures.entry(key.clone()).or_insert(0);
        let exp = *n;
        *n = n.saturating_add(1);
        let per_item = {
            let b = &limiter.per_item;
            let factor = 2f64.powi(exp.min(62) as i32);
            let d = b.base.as_secs_f64() * factor;
            if d > b.max.as_secs_f64() {
                b.max
            } else {
                Duration::from_secs_f64(d)
            }
        };
        let overall = match &limiter.overall {
            None => Duration::ZERO,
            Some(b) => {
                let now = Instant::now();
                let elapsed = now.duration_since(s.bucket_at).as_secs_f64();
                s.tokens = (s.tokens + elapsed * b.qps).min(f64::from(b.burst));
                s.bucket_at = now;
                s.tokens -= 1.0;
                if s.tokens >= 0.0 {
                    Duration::ZERO
                } else {
                    Duration::from_secs_f64(-s.tokens / b.qps)
                }
            }
        };
        per_item.max(overall)
    }

    /// Ends `key`'s back-off (after a successful sync).
    pub fn forget(&self, key: &K) {
        self.inner.state.lock().failures.remove(key);
    }

    /// How often `key` was re-queued with back-off since it was last forgotten.
    pub fn num_requeues(&self, key: &K) -> u32 {
        self.inner
            .state
            .lock()
            .failures
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// The next key to process, waiting for one; `None` once the queue is shut down and empty.
    /// The caller must call [`WorkQueue::done`] with it.
    pub async fn get(&self) -> Option<K> {
        loop {
            let notified = self.inner.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.inner.state.lock();
                if let Some(key) = s.queue.pop_front() {
                    s.dirty.remove(&key);
                    s.processing.insert(key.clone());
                    let more = !s.queue.is_empty();
                    drop(s);
                    if more {
                        // Pass the wake-up on: several keys may have arrived with one notify.
                        self.inner.ready.notify_one();
                    }
                    return Some(key);
                }
                if s.shutting_down {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Marks `key` processed; queues it again if it was added meanwhile.
    pub fn done(&self, key: &K) {
        let mut s = self.inner.state.lock();
        s.processing.remove(key);
        if s.dirty.contains(key) {
            s.queue.push_back(key.clone());
            drop(s);
            self.inner.ready.notify_one();
        }
    }

    /// Stops the queue: adds are ignored, and `get` returns `None` once it is empty.
    pub fn shut_down(&self) {
        self.inner.state.lock().shutting_down = true;
        self.inner.ready.notify_waiters();
        self.inner.timer.notify_one();
    }

    /// Whether [`WorkQueue::shut_down`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.state.lock().shutting_down
    }

    /// Keys queued and ready (not the delayed ones).
    pub fn len(&self) -> usize {
        self.inner.state.lock().queue.len()
    }

    /// Whether no key is ready.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Moves delayed keys into the queue when they are due; ends with the queue.
async fn delay_loop<K: Key>(weak: Weak<Inner<K>>, timer: Arc<Notify>) {
    loop {
        let notified = timer.notified();
        let Some(inner) = weak.upgrade() else { return };
        let queue = WorkQueue { inner };
        tokio::pin!(notified);
        notified.as_mut().enable();
        let mut due = Vec::new();
        let next = {
            let mut s = queue.inner.state.lock();
            if s.shutting_down {
                return;
            }
            let now = Instant::now();
            let mut next = None;
            while let Some(Reverse((at, seq))) = s.heap.peek().copied() {
                if at > now {
                    next = Some(at);
                    break;
                }
                s.heap.pop();
                let Some(key) = s.heap_keys.remove(&seq) else {
                    continue;
                };
                // A later add_after replaced by an earlier one leaves a stale entry behind.
                if s.waiting.get(&key) == Some(&at) {
                    s.waiting.remove(&key);
                    due.push(key);
                }
            }
            next
        };
        for key in due {
            queue.add(key);
        }
        drop(queue);
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = &mut notified => {}
                }
            }
            None => notified.await,
        }
    }
}

/// Runs `workers` workers on `queue` until it shuts down: each takes a key, runs `sync` on it,
/// forgets the key's back-off on success and re-queues it rate-limited on error (client-go's
/// `processNextWorkItem`).
pub async fn run_workers<K, F, Fut, E>(queue: WorkQueue<K>, workers: usize, sync: F)
where
    K: Key + std::fmt::Debug,
    F: Fn(K) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Display + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let queue = queue.clone();
        let sync = sync.clone();
        tasks.spawn(async move {
            while let Some(key) = queue.get().await {
                match sync(key.clone()).await {
                    Ok(()) => queue.forget(&key),
                    Err(e) => {
                        tracing::info!("{}: syncing {key:?} failed, requeuing: {e}", queue.name());
                        queue.add_rate_limited(key.clone());
                    }
                }
                queue.done(&key);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_queued_once_however_often_it_is_added() {
        let q = WorkQueue::new("t");
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.len(), 2);
        assert_eq!(q.get().await, Some("a"));
        assert_eq!(q.get().await, Some("b"));
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_key_added_while_processing_comes_back_after_done() {
        let q = WorkQueue::new("t");
        q.add("a");
        let k = q.get().await.unwrap();
        q.add("a");
        q.add("a");
        assert!(q.is_empty(), "not handed out twice at once");
        q.done(&k);
        assert_eq!(q.len(), 1);
        assert_eq!(q.get().await, Some("a"));
        q.done(&"a");
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn add_after_delays_and_the_earliest_time_wins() {
        let q = WorkQueue::new("t");
        q.add_after("a", Duration::from_secs(10));
        q.add_after("a", Duration::from_secs(2));
        q.add_after("a", Duration::from_secs(5));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(q.is_empty());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(q.len(), 1);
        assert_eq!(q.get().await, Some("a"));
        q.done(&"a");
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(q.is_empty(), "the superseded delays do not add it again");
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limited_adds_back_off_exponentially_until_forgotten() {
        let q = WorkQueue::with_rate_limiter(
            "t",
            RateLimiter {
                per_item: ExponentialBackoff {
                    base: Duration::from_millis(5),
                    max: Duration::from_secs(1000),
                },
                overall: None,
            },
        );
        let delays: Vec<_> = (0..4).map(|_| q.when(&"k")).collect();
        assert_eq!(
            delays,
            [5, 10, 20, 40].map(Duration::from_millis).to_vec(),
            "5 ms doubling"
        );
        assert_eq!(q.num_requeues(&"k"), 4);
        q.forget(&"k");
        assert_eq!(q.num_requeues(&"k"), 0);
        assert_eq!(q.when(&"k"), Duration::from_millis(5));
        for _ in 0..40 {
            q.when(&"k");
        }
        assert_eq!(q.when(&"k"), Duration::from_secs(1000), "capped");
    }

    #[tokio::test(start_paused = true)]
    async fn the_overall_bucket_limits_after_the_burst() {
        let q: WorkQueue<u32> = WorkQueue::new("t");
        for i in 0..100 {
            assert_eq!(q.when(&i), Duration::from_millis(5), "within the burst");
        }
        assert_eq!(
            q.when(&1000),
            Duration::from_millis(100),
            "10 per second after it"
        );
    }

    #[tokio::test]
    async fn get_waits_for_an_add_and_ends_on_shut_down() {
        let q = WorkQueue::new("t");
        let q2 = q.clone();
        let getter = tokio::spawn(async move { q2.get().await });
        tokio::task::yield_now().await;
        q.add(7);
        assert_eq!(getter.await.unwrap(), Some(7));
        let q3 = q.clone();
        let getter = tokio::spawn(async move { q3.get().await });
        tokio::task::yield_now().await;
        q.shut_down();
        assert_eq!(getter.await.unwrap(), None);
        q.add(8);
        assert!(q.is_empty(), "adds after shut-down are ignored");
    }

    #[tokio::test]
    async fn workers_retry_failures_and_forget_successes() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let q = WorkQueue::new("t");
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let q2 = q.clone();
        let run = tokio::spawn(run_workers(q.clone(), 2, move |k: &'static str| {
            let c = c.clone();
            let q2 = q2.clone();
            async move {
                let n = c.fetch_add(1, Ordering::SeqCst);
                if n < 2 {
                    return Err(format!("failure {n} for {k}"));
                }
                q2.shut_down();
                Ok(())
            }
        }));
        q.add("x");
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .expect("workers end after shut-down")
            .unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            3,
            "two failures, then success"
        );
        assert_eq!(q.num_requeues(&"x"), 0, "forgotten after the success");
    }
}

//! Work over many nodes split across the scheduler's threads (upstream `framework/parallelize`).
//! Filter and Score run once per node per cycle, so on a cluster of thousands of nodes they are the
//! scheduler's hot loop. The configuration's `parallelism` caps the threads and so do the
//! machine's cores (more threads than cores only add switching); the scheduling thread itself is
//! one of them.
//!
//! The first block runs on the calling thread and is timed; only work whose blocks take longer
//! than waking a thread is shared (`WORTH_A_THREAD`).
//!
//! The work comes in numbered blocks, claimed in order, and a claimed block always finishes, so
//! the blocks that ran are always a prefix: a caller that walks the results in block order gets
//! what a sequential loop would have got, whatever the threads' timing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A block must take this long before other threads join in.
const WORTH_A_THREAD: Duration = Duration::from_micros(100);

pub struct Parallelizer {
    /// The helper threads (`threads - 1`); none when one thread is all there is.
    pool: Option<rayon::ThreadPool>,
    threads: usize,
    /// How long the first block must take before helpers join (`WORTH_A_THREAD`).
    min_block: Duration,
}

impl Parallelizer {
    pub fn new(parallelism: usize) -> Parallelizer {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = parallelism.min(cores).max(1);
        let pool = if threads > 1 {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads - 1)
                .thread_name(|i| format!("scheduler-worker-{i}"))
                .build()
                .ok()
        } else {
            None
        };
        let threads = if pool.is_some() { threads } else { 1 };
        Parallelizer {
            pool,
            threads,
            min_block: WORTH_A_THREAD,
        }
    }

    /// Helpers join from the second block whatever the first cost: for tests that must take
    /// the parallel path.
    #[cfg(test)]
    pub fn eager(parallelism: usize) -> Parallelizer {
        Parallelizer {
            min_block: Duration::ZERO,
            ..Parallelizer::new(parallelism)
        }
    }

    /// One per `parallelism` in this process: profiles share their threads.
    pub fn shared(parallelism: usize) -> Arc<Parallelizer> {
        static SHARED: OnceLock<Mutex<HashMap<usize, Arc<Parallelizer>>>> = OnceLock::new();
        SHARED
            .get_or_init(Default::default)
            .lock()
            .entry(parallelism)
            .or_insert_with(|| Arc::new(Parallelizer::new(parallelism)))
            .clone()
    }

    /// How many threads work on a call, this one included.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `work(0)`, `work(1)`, … up to `blocks - 1` and returns the results in block order.
    /// No block is claimed once `done()` is true, so the result may be a shorter prefix.
    pub fn prefix<T: Send>(
        &self,
        blocks: usize,
        work: impl Fn(usize) -> T + Sync,
        done: impl Fn() -> bool + Sync,
    ) -> Vec<T> {
        let results: Vec<Mutex<Option<T>>> = (0..blocks).map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let run_one = || {
            if done() {
                return false;
            }
            let b = next.fetch_add(1, Ordering::Relaxed);
            if b >= blocks {
                return false;
            }
            let r = work(b);
            *results[b].lock() = Some(r);
            true
        };
        let worker = || while run_one() {};
        // The first block runs here, timed: helpers pay off only when a block costs more than
        // waking them. Measured on 2 cores, Filter and Score of simple pods (tens of µs per
        // block) ran faster alone, and left the core to the binding work and the API server.
        let started = Instant::now();
        if run_one() {
            match &self.pool {
                Some(pool) if blocks > 1 && started.elapsed() >= self.min_block => pool
                    .in_place_scope(|s| {
                        for _ in 1..self.threads.min(blocks - 1) {
                            s.spawn(|_| worker());
                        }
                        worker();
                    }),
                _ => worker(),
            }
        }
        results.into_iter().map_while(|r| r.into_inner()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn every_block_runs_once_and_comes_back_in_order() {
        for threads in [1, 2, 4] {
            let p = Parallelizer::new(threads);
            let got = p.prefix(
                100,
                |b| {
                    std::thread::sleep(Duration::from_micros(150));
                    b * 10
                },
                || false,
            );
            assert_eq!(got, (0..100).map(|b| b * 10).collect::<Vec<_>>());
        }
    }

    #[test]
    fn only_slow_blocks_are_shared_with_other_threads() {
        let p = Parallelizer::new(2);
        let threads_used = |pause: Duration| {
            let ids = Mutex::new(std::collections::HashSet::new());
            p.prefix(
                20,
                |_| {
                    ids.lock().insert(std::thread::current().id());
                    std::thread::sleep(pause);
                },
                || false,
            );
            ids.into_inner().len()
        };
        // A few tries each: a loaded machine may stall the first block or the helper.
        assert!(
            (0..5).any(|_| threads_used(Duration::ZERO) == 1),
            "fast blocks stay on this thread"
        );
        assert!((0..5).any(|_| threads_used(Duration::from_millis(1)) == p.threads()));
    }

    #[test]
    fn a_finished_search_stops_claiming_and_leaves_a_prefix() {
        let p = Parallelizer::new(4);
        let stop = AtomicBool::new(false);
        let got = p.prefix(
            1000,
            |b| {
                if b == 10 {
                    stop.store(true, Ordering::Relaxed);
                }
                b
            },
            || stop.load(Ordering::Relaxed),
        );
        assert!(got.len() >= 11 && got.len() < 1000, "{}", got.len());
        assert_eq!(got, (0..got.len()).collect::<Vec<_>>());
        assert!(p.prefix(0, |b| b, || false).is_empty());
    }
}

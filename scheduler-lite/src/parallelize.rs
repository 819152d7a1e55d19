//! Work over many nodes split across the scheduler's threads (upstream `framework/parallelize`).
//! Filter and Score run once per node per cycle, so on a cluster of thousands of nodes they are the
//! scheduler's hot loop. The configuration's `parallelism` caps the threads and so do the
//! machine's cores (more threads than cores only add switching); the scheduling thread itself is
//! one of them.
//!
//! The work comes in numbered blocks, claimed in order, and a claimed block always finishes, so
//! the blocks that ran are always a prefix: a caller that walks the results in block order gets
//! what a sequential loop would have got, whatever the threads' timing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

pub struct Parallelizer {
    /// The helper threads (`threads - 1`); none when one thread is all there is.
    pool: Option<rayon::ThreadPool>,
    threads: usize,
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
        Parallelizer { pool, threads }
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
        let worker = || {
            while !done() {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= blocks {
                    break;
                }
                let r = work(b);
                *results[b].lock() = Some(r);
            }
        };
        match &self.pool {
            Some(pool) if blocks > 1 => pool.in_place_scope(|s| {
                for _ in 1..self.threads.min(blocks) {
                    s.spawn(|_| worker());
                }
                worker();
            }),
            _ => worker(),
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
                    std::thread::yield_now();
                    b * 10
                },
                || false,
            );
            assert_eq!(got, (0..100).map(|b| b * 10).collect::<Vec<_>>());
        }
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

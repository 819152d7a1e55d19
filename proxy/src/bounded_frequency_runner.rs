//! Upstream's `BoundedFrequencyRunner` (`pkg/util/async/bounded_frequency_runner.go`): runs a
//! function when asked ([`RunHandle::run`]), but never more often than a token bucket allows
//! (one token per `min_interval`, at most `burst` saved up) and at least once per
//! `max_interval` even when nobody asks. Requests made while the function runs or waits for a
//! token coalesce into one run. This is how event handlers that only record changes get the
//! rules synced: they poke the runner; the runner decides when.
//!
//! Time is tokio's, so tests drive it with `tokio::time::pause`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Asks the runner for a run.
#[derive(Clone, Debug)]
pub struct RunHandle(Arc<Notify>);

impl RunHandle {
    /// Requests a run as soon as the rate limit allows; requests coalesce.
    pub fn run(&self) {
        self.0.notify_one();
    }
}

/// The runner's intervals and burst.
#[derive(Debug)]
pub struct BoundedFrequencyRunner {
    min_interval: Duration,
    max_interval: Duration,
    burst: u32,
    notify: Arc<Notify>,
}

impl BoundedFrequencyRunner {
    pub fn new(min_interval: Duration, max_interval: Duration, burst: u32) -> Self {
        BoundedFrequencyRunner {
            min_interval,
            max_interval: max_interval.max(min_interval),
            burst: burst.max(1),
            notify: Arc::new(Notify::new()),
        }
    }

    /// A handle for requesting runs.
    pub fn handle(&self) -> RunHandle {
        RunHandle(self.notify.clone())
    }

    /// Runs `f` as requested and bounded, forever (drop the future to stop).
    pub async fn run_loop(self, mut f: impl FnMut()) {
        let mut tokens = self.burst as f64;
        let mut refilled = Instant::now();
        let mut last_run = Instant::now();
        loop {
            tokio::select! {
                _ = self.notify.notified() => {}
                _ = tokio::time::sleep_until(last_run + self.max_interval) => {}
            }
            if !self.min_interval.is_zero() {
                let now = Instant::now();
                tokens = (tokens
                    + (now - refilled).as_secs_f64() / self.min_interval.as_secs_f64())
                .min(self.burst as f64);
                refilled = now;
                if tokens < 1.0 {
                    let wait = self.min_interval.mul_f64(1.0 - tokens);
                    tokio::time::sleep(wait).await;
                    tokens = 1.0;
                    refilled = Instant::now();
                }
                tokens -= 1.0;
            }
            // Requests made until now are served by this run; one that arrives from here on asks
            // for another.
            let _ = futures::FutureExt::now_or_never(self.notify.notified());
            f();
            last_run = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn bursts_then_rate_limited_then_coalesced() {
        let runner =
            BoundedFrequencyRunner::new(Duration::from_secs(1), Duration::from_secs(60), 2);
        let h = runner.handle();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let task = tokio::spawn(runner.run_loop(move || {
            r.fetch_add(1, Ordering::SeqCst);
        }));
        settle().await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            0,
            "no run before one is asked for"
        );
        h.run();
        settle().await;
        h.run();
        settle().await;
        assert_eq!(runs.load(Ordering::SeqCst), 2, "the burst runs at once");
        for _ in 0..5 {
            h.run();
        }
        settle().await;
        assert_eq!(runs.load(Ordering::SeqCst), 2, "out of tokens: waits");
        tokio::time::advance(Duration::from_millis(1100)).await;
        settle().await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            3,
            "five requests coalesce into one run"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        settle().await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            3,
            "nothing asked, max interval not reached"
        );
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn runs_at_least_every_max_interval() {
        let runner =
            BoundedFrequencyRunner::new(Duration::from_secs(1), Duration::from_secs(10), 2);
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let task = tokio::spawn(runner.run_loop(move || {
            r.fetch_add(1, Ordering::SeqCst);
        }));
        settle().await;
        for want in 1..=3 {
            tokio::time::advance(Duration::from_secs(10)).await;
            settle().await;
            assert_eq!(runs.load(Ordering::SeqCst), want);
        }
        task.abort();
    }
}

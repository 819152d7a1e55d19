//! Container restart back-off (CrashLoopBackOff), as upstream's kubelet does it.
//!
//! Upstream keeps one `flowcontrol.Backoff` (10 s initial, 5 min cap, no jitter) and
//! `kubeGenericRuntimeManager.doBackOff` consults it before restarting an exited container:
//! the key is the container's stable key (pod name, namespace, uid, container name and the
//! container's spec hash, so a spec change starts afresh), and the event time is the *finish
//! time* of the container's last exit. The container is held back while less than the current
//! back-off has passed since that exit; otherwise the back-off is advanced (doubled, capped) and
//! the restart goes ahead. An entry counts as expired — and the next restart starts again at
//! 10 s — when the exit came more than twice the cap (10 min) after the last restart decision,
//! i.e. the container ran cleanly for 10 minutes.
//!
//! Time is injected through [`Clock`] so tests step a [`FakeClock`] instead of sleeping. The
//! pod sync planner ([`crate::plan::compute_pod_actions`]) consults the same [`Backoff`] through
//! its `BackoffOracle` trait, with CRI finish times converted by [`unix_nanos`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Upstream's initial container back-off.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
/// Upstream's maximum container back-off (`MaxContainerBackOff`).
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The reason a held-back container's waiting state carries.
pub const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";

/// Wall-clock source; container finish times are wall-clock timestamps from the runtime.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealClock;

impl Clock for RealClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug)]
pub struct FakeClock(Mutex<SystemTime>);

impl FakeClock {
    pub fn new(start: SystemTime) -> FakeClock {
        FakeClock(Mutex::new(start))
    }
    pub fn set(&self, t: SystemTime) {
        *self.0.lock().unwrap() = t;
    }
    pub fn step(&self, d: Duration) {
        *self.0.lock().unwrap() += d;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> SystemTime {
        (**self).now()
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    backoff: Duration,
    last_update: SystemTime,
}

/// Per-key exponential back-off (upstream `flowcontrol.Backoff` without jitter).
pub struct Backoff {
    initial: Duration,
    max: Duration,
    clock: Arc<dyn Clock>,
    entries: Mutex<HashMap<String, Entry>>,
}

/// The container was held back: upstream's `ErrCrashLoopBackOff` with its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CrashLoopBackOff {
    /// The current back-off interval.
    pub delay: Duration,
    /// When the container may be restarted (finish time + delay).
    pub retry_at: SystemTime,
    /// `back-off 20s restarting failed container=c pod=p_ns(uid)`, as upstream.
    pub message: String,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, clock: Arc<dyn Clock>) -> Backoff {
        Backoff {
            initial,
            max,
            clock,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The kubelet's image pull back-off (upstream `kubelet/images`): also 10 s doubling to
    /// 5 min, keyed by pod UID and image.
    pub fn for_image_pulls(clock: Arc<dyn Clock>) -> Backoff {
        Backoff::new(INITIAL_BACKOFF, MAX_BACKOFF, clock)
    }

    /// The kubelet's container back-off: 10 s doubling to 5 min.
    pub fn for_containers(clock: Arc<dyn Clock>) -> Backoff {
        Backoff::new(INITIAL_BACKOFF, MAX_BACKOFF, clock)
    }

    /// The current interval for `id` (zero when unknown).
    pub fn get(&self, id: &str) -> Duration {
        self.entries
            .lock()
            .unwrap()
            .get(id)
            .map(|e| e.backoff)
            .unwrap_or_default()
    }

    fn expired(&self, event_time: SystemTime, last_update: SystemTime) -> bool {
        // Stable if nothing happened for twice the cap.
        event_time
            .duration_since(last_update)
            .is_ok_and(|d| d > self.max * 2)
    }

    /// Advances the back-off of `id` for an event at `event_time`: starts (or restarts, when
    /// expired) at the initial interval, else doubles up to the cap.
    pub fn next(&self, id: &str, event_time: SystemTime) {
        let now = self.clock.now();
        let mut entries = self.entries.lock().unwrap();
        let backoff = match entries.get(id) {
            Some(e) if !self.expired(event_time, e.last_update) => (e.backoff * 2).min(self.max),
            _ => self.initial,
        };
        entries.insert(
            id.to_string(),
            Entry {
                backoff,
                last_update: now,
            },
        );
    }

    /// Whether less than the current interval has passed since `event_time`.
    pub fn is_in_backoff_since(&self, id: &str, event_time: SystemTime) -> bool {
        let entries = self.entries.lock().unwrap();
        let Some(e) = entries.get(id) else {
            return false;
        };
        if self.expired(event_time, e.last_update) {
            return false;
        }
        let since = self
            .clock
            .now()
            .duration_since(event_time)
            .unwrap_or_default();
        since < e.backoff
    }

    /// How long `id` stays in back-off counted from its last update (upstream's
    /// `IsInBackOffSinceUpdate`, which the image puller uses); `None` when it is not.
    pub fn remaining_since_update(&self, id: &str) -> Option<Duration> {
        let entries = self.entries.lock().unwrap();
        let e = entries.get(id)?;
        let since = self
            .clock
            .now()
            .duration_since(e.last_update)
            .unwrap_or_default();
        (since < e.backoff).then(|| e.backoff - since)
    }

    /// Advances `id` for an event now (a failed image pull).
    pub fn next_now(&self, id: &str) {
        self.next(id, self.clock.now());
    }

    /// Forgets `id`.
    pub fn reset(&self, id: &str) {
        self.entries.lock().unwrap().remove(id);
    }

    /// Drops entries not updated for twice the cap (upstream runs this periodically).
    pub fn gc(&self) {
        let now = self.clock.now();
        let limit = self.max * 2;
        self.entries
            .lock()
            .unwrap()
            .retain(|_, e| now.duration_since(e.last_update).unwrap_or_default() <= limit);
    }

    /// Upstream's `doBackOff` for one container that has exited at `finished_at`: `Ok(())` means
    /// restart now (and the back-off has been advanced); `Err` carries the CrashLoopBackOff
    /// message for the container's waiting state. `None` (no exited instance) never backs off.
    pub fn check_restart(
        &self,
        key: &ContainerKey<'_>,
        finished_at: Option<SystemTime>,
    ) -> Result<(), CrashLoopBackOff> {
        let Some(ts) = finished_at else {
            return Ok(());
        };
        let id = key.stable_key();
        if self.is_in_backoff_since(&id, ts) {
            let delay = self.get(&id);
            return Err(CrashLoopBackOff {
                delay,
                retry_at: ts + delay,
                message: key.back_off_message(delay),
            });
        }
        self.next(&id, ts);
        Ok(())
    }
}

/// Identifies a container for back-off purposes (upstream `getStableKey`).
#[derive(Debug, Clone, Copy)]
pub struct ContainerKey<'a> {
    pub pod_name: &'a str,
    pub namespace: &'a str,
    pub pod_uid: &'a str,
    pub container_name: &'a str,
    /// The container spec hash (hex), so a changed spec is a new key.
    pub spec_hash: &'a str,
}

impl ContainerKey<'_> {
    pub fn stable_key(&self) -> String {
        format!(
            "{}_{}_{}_{}_{}",
            self.pod_name, self.namespace, self.pod_uid, self.container_name, self.spec_hash
        )
    }

    /// Upstream's CrashLoopBackOff message for a container held back for `delay`:
    /// `back-off 20s restarting failed container=c pod=p_ns(uid)`.
    pub fn back_off_message(&self, delay: Duration) -> String {
        format!(
            "back-off {} restarting failed container={} pod={}_{}({})",
            go_duration(delay),
            self.container_name,
            self.pod_name,
            self.namespace,
            self.pod_uid
        )
    }
}

/// A CRI timestamp (nanoseconds since the epoch) as a wall-clock time; unset (≤ 0) is the epoch.
pub fn unix_nanos(ns: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64)
}

/// Formats as Go's `time.Duration.String` does, to the millisecond (`10s`, `1m20s`, `1.5s`), as
/// upstream's messages print `d.Truncate(time.Millisecond)`.
pub fn go_duration(d: Duration) -> String {
    machinery::duration::format(Duration::from_millis(d.as_millis() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Arc<FakeClock>, Backoff) {
        let clock = Arc::new(FakeClock::new(
            UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ));
        let b = Backoff::for_containers(clock.clone());
        (clock, b)
    }

    const KEY: ContainerKey<'static> = ContainerKey {
        pod_name: "web",
        namespace: "default",
        pod_uid: "u1",
        container_name: "app",
        spec_hash: "abc",
    };

    /// Crash → wait for the back-off → restart → crash immediately, again and again: the holds
    /// are 10, 20, 40, 80, 160, 300, 300 s (the first restart is immediate).
    #[test]
    fn intervals_match_upstream() {
        let (clock, b) = setup();
        // First exit: restart at once.
        let finished = clock.now();
        assert_eq!(b.check_restart(&KEY, Some(finished)), Ok(()));
        let mut waits = Vec::new();
        for _ in 0..7 {
            // The restarted container crashes at once.
            let finished = clock.now();
            let err = b.check_restart(&KEY, Some(finished)).unwrap_err();
            let mut waited = Duration::ZERO;
            // Step second by second until the restart is allowed.
            while b.check_restart(&KEY, Some(finished)).is_err() {
                clock.step(Duration::from_secs(1));
                waited += Duration::from_secs(1);
            }
            assert_eq!(waited, err.delay, "{}", err.message);
            waits.push(waited.as_secs());
        }
        assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn message_matches_upstream() {
        let (clock, b) = setup();
        let t = clock.now();
        b.check_restart(&KEY, Some(t)).unwrap();
        clock.step(Duration::from_secs(3));
        let err = b.check_restart(&KEY, Some(clock.now())).unwrap_err();
        assert_eq!(
            err.message,
            "back-off 10s restarting failed container=app pod=web_default(u1)"
        );
        assert_eq!(err.retry_at, clock.now() + Duration::from_secs(10));
        assert_eq!(go_duration(Duration::from_secs(80)), "1m20s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(go_duration(Duration::from_secs(3700)), "1h1m40s");
    }

    #[test]
    fn resets_after_ten_minutes_of_running() {
        let (clock, b) = setup();
        b.check_restart(&KEY, Some(clock.now())).unwrap();
        // Push the back-off up to 40 s.
        for _ in 0..2 {
            let f = clock.now();
            while b.check_restart(&KEY, Some(f)).is_err() {
                clock.step(Duration::from_secs(1));
            }
        }
        assert_eq!(b.get(&KEY.stable_key()), Duration::from_secs(40));
        // Runs 10 min exactly, then crashes: not yet stable (needs more than 2 × cap), so it
        // is held back by the current 40 s and then doubles.
        clock.step(Duration::from_secs(600));
        let err = b.check_restart(&KEY, Some(clock.now())).unwrap_err();
        assert_eq!(err.delay, Duration::from_secs(40));
        let finished = clock.now();
        clock.step(Duration::from_secs(40));
        assert!(b.check_restart(&KEY, Some(finished)).is_ok());
        assert_eq!(b.get(&KEY.stable_key()), Duration::from_secs(80));
        // Runs 10 min and 1 s: the exit is past the window, restart at once and back to 10 s.
        clock.step(Duration::from_secs(601));
        assert!(b.check_restart(&KEY, Some(clock.now())).is_ok());
        assert_eq!(b.get(&KEY.stable_key()), Duration::from_secs(10));
        // And the next quick crash waits 10 s again... then 20 s.
        let err = b.check_restart(&KEY, Some(clock.now())).unwrap_err();
        assert_eq!(err.delay, Duration::from_secs(10));
    }

    #[test]
    fn keys_are_independent_and_spec_changes_start_afresh() {
        let (clock, b) = setup();
        b.check_restart(&KEY, Some(clock.now())).unwrap();
        assert!(b.check_restart(&KEY, Some(clock.now())).is_err());
        let changed = ContainerKey {
            spec_hash: "def",
            ..KEY
        };
        assert!(b.check_restart(&changed, Some(clock.now())).is_ok());
        let other = ContainerKey {
            container_name: "sidecar",
            ..KEY
        };
        assert!(b.check_restart(&other, Some(clock.now())).is_ok());
        // No exited instance: never held back.
        assert!(b.check_restart(&KEY, None).is_ok());
    }

    /// The image puller's back-off (upstream `kubelet/images`): a failed pull starts 10 s of
    /// ImagePullBackOff counted from the failure; each failure after it doubles, up to 5 min.
    #[test]
    fn image_pull_back_off_counts_from_the_last_failure() {
        let (clock, b) = setup();
        let key = "uid_registry/nope:1";
        assert_eq!(b.remaining_since_update(key), None);
        let mut holds = Vec::new();
        for _ in 0..7 {
            b.next_now(key);
            let hold = b
                .remaining_since_update(key)
                .expect("in back-off after a failure");
            clock.step(hold - Duration::from_secs(1));
            assert!(b.remaining_since_update(key).is_some());
            clock.step(Duration::from_secs(1));
            assert_eq!(b.remaining_since_update(key), None);
            holds.push(hold.as_secs());
        }
        assert_eq!(holds, [10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn gc_drops_stale_entries() {
        let (clock, b) = setup();
        b.next("a", clock.now());
        clock.step(Duration::from_secs(500));
        b.next("b", clock.now());
        clock.step(Duration::from_secs(101));
        b.gc();
        assert_eq!(b.get("a"), Duration::ZERO);
        assert_eq!(b.get("b"), Duration::from_secs(10));
        b.reset("b");
        assert_eq!(b.get("b"), Duration::ZERO);
    }
}

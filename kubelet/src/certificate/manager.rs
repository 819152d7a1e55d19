//! The certificate manager (upstream's client-go `util/certificate.Manager`): keeps one pair
//! (client or serving) current. The rotation deadline is `notBefore + lifetime × (0.7 + 0.2 ×
//! jitter)` with a random jitter in [0, 1) — somewhere between 70% and 90% of the lifetime, so a
//! fleet of kubelets does not renew at once. At the deadline (at once when there is no pair, or
//! it is no longer valid) it makes a new key and request, stores the issued pair, and publishes
//! it on a watch channel the TLS stacks read from. Failures back off exponentially (2 s doubling
//! to 5 min). The clock is injected so the schedule is testable.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::Rng;
use tokio::sync::watch;

use super::csr::{request_certificate, CertRequest};
use super::store::FileStore;
use super::KeyedCert;

/// Where the time comes from.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealClock;

impl Clock for RealClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// When a pair valid from `not_before` to `not_after` is renewed, for `jitter` in [0, 1)
/// (upstream's `nextRotationDeadline` with `jitteryDuration(0.7 … 0.9)`).
pub fn rotation_deadline(not_before: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let total = not_after.duration_since(not_before).unwrap_or_default();
    not_before + total.mul_f64(0.7 + 0.2 * jitter.clamp(0.0, 1.0))
}

/// How long to wait before renewing `current` at `now` (zero when there is none or it is not
/// valid).
pub fn wait_before_rotation(current: Option<&KeyedCert>, now: SystemTime, jitter: f64) -> Duration {
    match current {
        Some(c) if c.valid_at(now) => rotation_deadline(c.not_before, c.not_after, jitter)
            .duration_since(now)
            .unwrap_or_default(),
        _ => Duration::ZERO,
    }
}

/// The next back-off after `prev` (2 s, doubling, at most 5 min).
pub fn next_backoff(prev: Option<Duration>) -> Duration {
    match prev {
        None => Duration::from_secs(2),
        Some(d) => (d * 2).min(Duration::from_secs(300)),
    }
}

/// Produces the request to send (a serving request needs the node's current addresses; `None`
/// = not yet possible, try again later).
pub type RequestFn =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Option<CertRequest>> + Send>> + Send + Sync>;

/// One managed pair.
pub struct Manager {
    name: &'static str,
    client: kube::Client,
    store: FileStore,
    request: RequestFn,
    clock: Arc<dyn Clock>,
    tx: watch::Sender<Option<KeyedCert>>,
    /// How long one request may wait for its certificate.
    pub request_timeout: Duration,
}

impl Manager {
    /// A manager of `store`'s pair, starting from what the store holds.
    pub fn new(
        name: &'static str,
        client: kube::Client,
        store: FileStore,
        request: RequestFn,
        clock: Arc<dyn Clock>,
    ) -> Manager {
        let (tx, _) = watch::channel(store.current());
        Manager::with_channel(name, client, store, request, clock, tx)
    }

    /// A manager publishing on `tx`, whose current value is the starting pair (a client built
    /// before the manager already reads from its receiver).
    pub fn with_channel(
        name: &'static str,
        client: kube::Client,
        store: FileStore,
        request: RequestFn,
        clock: Arc<dyn Clock>,
        tx: watch::Sender<Option<KeyedCert>>,
    ) -> Manager {
        Manager {
            name,
            client,
            store,
            request,
            clock,
            tx,
            request_timeout: Duration::from_secs(15 * 60),
        }
    }

    /// The current pair, updated on every rotation.
    pub fn subscribe(&self) -> watch::Receiver<Option<KeyedCert>> {
        self.tx.subscribe()
    }

    /// Renews the pair forever.
    pub async fn run(self) {
        let mut backoff: Option<Duration> = None;
        loop {
            let jitter = rand::rng().random::<f64>();
            let wait = {
                let cur = self.tx.borrow();
                wait_before_rotation(cur.as_ref(), self.clock.now(), jitter)
            };
            if !wait.is_zero() {
                tracing::info!(
                    "{} certificate: rotation in {:?}",
                    self.name,
                    Duration::from_secs(wait.as_secs())
                );
                tokio::time::sleep(wait).await;
                // Look again: the wait may have been long and the clock may have jumped.
                let cur = self.tx.borrow().clone();
                if !wait_before_rotation(cur.as_ref(), self.clock.now(), jitter).is_zero() {
                    continue;
                }
            }
            match self.rotate().await {
                Ok(()) => backoff = None,
                Err(e) => {
                    let d = next_backoff(backoff);
                    tracing::warn!(
                        "{} certificate: rotation failed, retrying in {d:?}: {e}",
                        self.name
                    );
                    backoff = Some(d);
                    tokio::time::sleep(d).await;
                }
            }
        }
    }

    /// One renewal: request, store, publish.
    pub async fn rotate(&self) -> Result<(), super::CertificateError> {
        let Some(req) = (self.request)().await else {
            return Err(super::CertificateError::Invalid {
                what: format!("{} certificate", self.name),
                message: "the request cannot be made yet".into(),
            });
        };
        let (cert, key) = request_certificate(&self.client, &req, self.request_timeout).await?;
        let pair = self.store.update(&cert, &key)?;
        tracing::info!(
            "{} certificate rotated, valid until {}",
            self.name,
            chrono::DateTime::<chrono::Utc>::from(pair.not_after).to_rfc3339()
        );
        self.tx.send_replace(Some(pair));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_valid(from: SystemTime, to: SystemTime) -> KeyedCert {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a".to_string()]).unwrap();
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        params.not_before = epoch + from.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        params.not_after = epoch + to.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        let pem = format!(
            "{}{}",
            params.self_signed(&key).unwrap().pem(),
            key.serialize_pem()
        );
        KeyedCert::from_pem(&pem, "test").unwrap()
    }

    struct FixedClock(SystemTime);
    impl Clock for FixedClock {
        fn now(&self) -> SystemTime {
            self.0
        }
    }

    #[test]
    fn the_deadline_is_between_70_and_90_percent_of_the_lifetime() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let t1 = t0 + Duration::from_secs(1000);
        assert_eq!(
            rotation_deadline(t0, t1, 0.0),
            t0 + Duration::from_secs(700)
        );
        assert_eq!(
            rotation_deadline(t0, t1, 0.5),
            t0 + Duration::from_secs(800)
        );
        for _ in 0..100 {
            let j = rand::rng().random::<f64>();
            let d = rotation_deadline(t0, t1, j);
            assert!(d >= t0 + Duration::from_secs(700) && d <= t0 + Duration::from_secs(900));
        }
    }

    #[test]
    fn the_wait_follows_an_injected_clock() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let cert = cert_valid(t0, t0 + Duration::from_secs(1000));
        let clock = FixedClock(t0 + Duration::from_secs(100));
        // Jitter 0.5: the deadline is t0 + 800 s, 700 s after "now".
        assert_eq!(
            wait_before_rotation(Some(&cert), clock.now(), 0.5),
            Duration::from_secs(700)
        );
        // Past the deadline, or expired, or no certificate at all: at once.
        let late = FixedClock(t0 + Duration::from_secs(950));
        assert_eq!(
            wait_before_rotation(Some(&cert), late.now(), 0.5),
            Duration::ZERO
        );
        let expired = FixedClock(t0 + Duration::from_secs(2000));
        assert_eq!(
            wait_before_rotation(Some(&cert), expired.now(), 0.0),
            Duration::ZERO
        );
        assert_eq!(wait_before_rotation(None, clock.now(), 0.0), Duration::ZERO);
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let mut d = None;
        let mut seen = Vec::new();
        for _ in 0..10 {
            let n = next_backoff(d);
            seen.push(n.as_secs());
            d = Some(n);
        }
        assert_eq!(seen, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    }
}

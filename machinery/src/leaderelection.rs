//! Leader election through a coordination.k8s.io/v1 Lease: client-go's `tools/leaderelection`
//! with its `LeaseLock`, for the controller-manager and the scheduler running as several replicas.
//!
//! [`LeaderElector::run`] tries to take the lease every `retry_period`; once it holds it, the
//! component's work runs while the lease is renewed every `retry_period`. A lease held by another
//! identity counts as expired only when its record has not changed for `lease_duration` as
//! observed on *this* clock (client-go compares local observation times, never the holder's
//! `renewTime`, so clock skew between replicas does not matter). If renewing fails for
//! `renew_deadline`, leadership is lost: the work is dropped (cancelled) and `run` returns
//! [`LeaderElectionError::Lost`] — upstream's components exit then, and so do ours. When the work
//! ends by itself the lease is released (`ReleaseOnCancel`), so a standby takes over at once.
//! Updates carry the lease's resourceVersion, so two candidates never both win.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use parking_lot::Mutex;
use tokio::time::Instant;

/// Upstream's leader-election settings (`--leader-elect-*` flags).
#[derive(Debug, Clone)]
pub struct LeaderElectionConfig {
    /// The Lease's namespace (`--leader-elect-resource-namespace`, default `kube-system`).
    pub namespace: String,
    /// The Lease's name (`--leader-elect-resource-name`, e.g. `kube-controller-manager`).
    pub name: String,
    /// This candidate's identity (upstream: `<hostname>_<uuid>`).
    pub identity: String,
    /// How long a lease is valid without renewal (default 15 s).
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before giving up (default 10 s).
    pub renew_deadline: Duration,
    /// How often candidates try to acquire and the leader renews (default 2 s).
    pub retry_period: Duration,
}

impl LeaderElectionConfig {
    /// Upstream's defaults for lease `namespace/name`.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        LeaderElectionConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Why [`LeaderElector::run`] ended without the work finishing.
#[derive(Debug, thiserror::Error)]
pub enum LeaderElectionError {
    #[error("leader election lost: lease {0} not renewed within the renew deadline")]
    Lost(String),
    #[error("leader election: invalid configuration: {0}")]
    Config(String),
}

/// The record as last observed, and when this process observed it.
struct Observed {
    spec: LeaseSpec,
    resource_version: Option<String>,
    at: Instant,
}

/// Competes for one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaderElectionConfig,
    observed: Mutex<Option<Observed>>,
}

impl LeaderElector {
    pub fn new(client: kube::Client, config: LeaderElectionConfig) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: Mutex::new(None),
        }
    }

    /// The identity that holds the lease as last observed (None before the first try).
    pub fn observed_leader(&self) -> Option<String> {
        self.observed
            .lock()
            .as_ref()
            .and_then(|o| o.spec.holder_identity.clone())
    }

    /// Waits to become leader, then runs `work` while renewing the lease. Returns the work's
    /// result when it ends (the lease is released), or [`LeaderElectionError::Lost`].
    pub async fn run<F, T>(&self, work: F) -> Result<T, LeaderElectionError>
    where
        F: Future<Output = T>,
    {
        let c = &self.config;
        if c.lease_duration <= c.renew_deadline || c.renew_deadline <= c.retry_period {
            return Err(LeaderElectionError::Config(
                "leaseDuration must exceed renewDeadline, which must exceed retryPeriod".into(),
            ));
        }
        loop {
            if self.try_acquire_or_renew().await {
                break;
            }
            tokio::time::sleep(jittered(c.retry_period)).await;
        }
        tracing::info!(
            "successfully acquired lease {}/{} as {}",
            c.namespace,
            c.name,
            c.identity
        );
        let out = tokio::select! {
            out = work => out,
            lost = self.renew_loop() => return Err(lost),
        };
        self.release().await;
        Ok(out)
    }

    /// Renews every retry period; returns when a renewal did not succeed within the deadline.
    async fn renew_loop(&self) -> LeaderElectionError {
        let c = &self.config;
        let mut last_renew = Instant::now();
        loop {
            tokio::time::sleep(c.retry_period).await;
            if self.try_acquire_or_renew().await {
                last_renew = Instant::now();
            } else if last_renew.elapsed() >= c.renew_deadline {
                tracing::warn!("failed to renew lease {}/{}", c.namespace, c.name);
                return LeaderElectionError::Lost(format!("{}/{}", c.namespace, c.name));
            }
        }
    }

    /// One attempt (client-go's `tryAcquireOrRenew`): true when this candidate holds the lease.
    async fn try_acquire_or_renew(&self) -> bool {
        let c = &self.config;
        let now = MicroTime(Timestamp::now());
        let current = match self.api.get_opt(&c.name).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!("getting lease {}/{}: {e}", c.namespace, c.name);
                return false;
            }
        };
        let Some(lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(c.name.clone()),
                    namespace: Some(c.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(c.identity.clone()),
                    lease_duration_seconds: Some(c.lease_duration.as_secs() as i32),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created);
                    true
                }
                Err(e) => {
                    tracing::debug!("creating lease {}/{}: {e}", c.namespace, c.name);
                    false
                }
            };
        };
        self.observe(&lease);
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let we_hold = holder == c.identity;
        if !holder.is_empty() && !we_hold {
            let observed_at = self.observed.lock().as_ref().map(|o| o.at);
            let valid_for =
                Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
            if observed_at.is_some_and(|at| at + valid_for > Instant::now()) {
                return false;
            }
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        let new_spec = LeaseSpec {
            holder_identity: Some(c.identity.clone()),
            lease_duration_seconds: Some(c.lease_duration.as_secs() as i32),
            acquire_time: if we_hold {
                spec.acquire_time.clone()
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(if we_hold {
                transitions
            } else {
                transitions + 1
            }),
            ..spec
        };
        let mut updated = lease.clone();
        updated.spec = Some(new_spec);
        match self
            .api
            .replace(&c.name, &PostParams::default(), &updated)
            .await
        {
            Ok(l) => {
                self.observe(&l);
                true
            }
            Err(e) => {
                tracing::debug!("updating lease {}/{}: {e}", c.namespace, c.name);
                false
            }
        }
    }

    /// Remembers the record and when it was seen, if it changed.
    fn observe(&self, lease: &Lease) {
        let spec = lease.spec.clone().unwrap_or_default();
        let mut o = self.observed.lock();
        let changed = o.as_ref().is_none_or(|prev| {
            prev.spec != spec || prev.resource_version != lease.metadata.resource_version
        });
        if changed {
            *o = Some(Observed {
                spec,
                resource_version: lease.metadata.resource_version.clone(),
                at: Instant::now(),
            });
        }
    }

    /// Gives the lease up (client-go's `release`): no holder, a one-second duration.
    async fn release(&self) {
        let c = &self.config;
        let Ok(Some(mut lease)) = self.api.get_opt(&c.name).await else {
            return;
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(c.identity.as_str()) {
            return;
        }
        let now = MicroTime(Timestamp::now());
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            ..spec
        });
        if let Err(e) = self
            .api
            .replace(&c.name, &PostParams::default(), &lease)
            .await
        {
            tracing::debug!("releasing lease {}/{}: {e}", c.namespace, c.name);
        }
    }
}

/// client-go's `wait.Jitter(d, 1.2)`: between d and 2.2 d.
fn jittered(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    d + d.mul_f64(1.2 * f64::from(nanos % 1000) / 1000.0)
}

/// A candidate identity as upstream makes it: `<hostname>_<unique suffix>`.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let unique = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|u| u.trim().to_string())
        .unwrap_or_else(|_| std::process::id().to_string());
    format!("{host}_{unique}")
}

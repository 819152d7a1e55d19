//! Image garbage collection (upstream's `pkg/kubelet/images/image_gc_manager.go`): every five
//! minutes ([`IMAGE_GC_PERIOD`]) the kubelet frees disk on the image filesystem by removing
//! images no container uses.
//!
//! Each round first *detects*: every image the runtime lists gets a record with the time it was
//! first seen, and the images of all containers (running or not: `ListContainers`' image refs,
//! image IDs and specs) have their last-used time set to now. Records are in memory only, as
//! upstream's: after a restart every image starts young again, which `imageMinimumGCAge` covers.
//!
//! Then [`plan`], a pure function, decides over the evictable images (not in use, not `pinned` —
//! the runtime pins the sandbox image), least recently used first (ties: first detected first):
//!
//! 1. with `imageMaximumGCAge` set, and the kubelet up for longer than it, images unused for
//!    longer than it go;
//! 2. if the image filesystem is at `imageGCHighThresholdPercent` (85) or more, images go until
//!    usage would be down to `imageGCLowThresholdPercent` (80), skipping images younger than
//!    `imageMinimumGCAge` (2m).
//!
//! When the eligible images do not free enough, the round reports upstream's `ImageGCFailed`
//! warning. The filesystem's size and free space come from `statfs` on the mountpoint the
//! runtime reports in `ImageFsInfo` (as upstream's cadvisor lookup), or from an injected reader.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cri::pb;
use parking_lot::Mutex;

use crate::runtime::Runtime;

/// How often image GC runs (upstream's `ImageGCPeriod`).
pub const IMAGE_GC_PERIOD: Duration = Duration::from_secs(300);

/// The reason upstream's event carries when GC cannot free enough.
pub const IMAGE_GC_FAILED: &str = "ImageGCFailed";

/// Upstream's `ImageGCPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageGcPolicy {
    pub high_threshold_percent: i32,
    pub low_threshold_percent: i32,
    /// An image first seen less than this ago is not removed for space.
    pub min_age: Duration,
    /// Unused images older than this are removed whatever the usage; zero: off.
    pub max_age: Duration,
}

impl Default for ImageGcPolicy {
    fn default() -> Self {
        ImageGcPolicy {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            min_age: Duration::from_secs(120),
            max_age: Duration::ZERO,
        }
    }
}

impl ImageGcPolicy {
    /// The policy from the configuration file's settings (validated before).
    pub fn from_settings(s: &crate::config::KubeletConfiguration) -> Self {
        ImageGcPolicy {
            high_threshold_percent: s.image_gc_high_threshold_percent,
            low_threshold_percent: s.image_gc_low_threshold_percent,
            min_age: s.image_minimum_gc_age,
            max_age: s.image_maximum_gc_age,
        }
    }
}

/// What the kubelet remembers of one image (upstream's `imageRecord`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRecord {
    pub first_detected: SystemTime,
    /// `None`: not seen in use since the kubelet started.
    pub last_used: Option<SystemTime>,
    pub size: u64,
    pub pinned: bool,
}

/// The image filesystem's size and free space, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsStats {
    pub capacity: u64,
    pub available: u64,
}

/// The image IDs some container uses: an image is in use when a container's image ref, image ID
/// or image spec names its ID, one of its tags or one of its digests.
pub fn images_in_use(images: &[pb::Image], containers: &[pb::Container]) -> HashSet<String> {
    let mut refs: HashSet<&str> = HashSet::new();
    for c in containers {
        refs.insert(&c.image_ref);
        refs.insert(&c.image_id);
        if let Some(spec) = &c.image {
            refs.insert(&spec.image);
        }
    }
    refs.remove("");
    images
        .iter()
        .filter(|i| {
            refs.contains(i.id.as_str())
                || i.repo_tags
                    .iter()
                    .chain(&i.repo_digests)
                    .any(|r| refs.contains(r.as_str()))
        })
        .map(|i| i.id.clone())
        .collect()
}

/// Upstream's `detectImages`: records for new images, last-used times for images in use, and
/// records dropped for images that are gone.
pub fn detect_images(
    records: &mut HashMap<String, ImageRecord>,
    images: &[pb::Image],
    in_use: &HashSet<String>,
    now: SystemTime,
) {
    let present: HashSet<&str> = images.iter().map(|i| i.id.as_str()).collect();
    records.retain(|id, _| present.contains(id.as_str()));
    for i in images {
        let r = records.entry(i.id.clone()).or_insert(ImageRecord {
            first_detected: now,
            last_used: None,
            size: 0,
            pinned: false,
        });
        if in_use.contains(&i.id) {
            r.last_used = Some(now);
        }
        r.size = i.size;
        r.pinned = i.pinned;
    }
}

/// One round's decisions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageGcPlan {
    /// Image IDs unused for longer than the maximum age.
    pub remove_old: Vec<String>,
    /// Image IDs to remove for space, least recently used first.
    pub remove_for_space: Vec<String>,
    /// The filesystem's usage in percent.
    pub usage_percent: i32,
    /// Bytes the thresholds ask to free (0 below the high threshold).
    pub bytes_to_free: u64,
    /// Bytes the removals for space free (their sizes), to compare with `bytes_to_free`.
    pub bytes_freed: u64,
}

impl ImageGcPlan {
    /// Upstream's ImageGCFailed message when the eligible images do not free enough.
    pub fn shortfall(&self) -> Option<String> {
        (self.bytes_freed < self.bytes_to_free).then(|| {
            format!(
                "Failed to garbage collect required amount of images. Attempted to free {} bytes, but only found {} bytes eligible to free.",
                self.bytes_to_free, self.bytes_freed
            )
        })
    }
}

/// Errors of one image GC round.
#[derive(Debug, thiserror::Error)]
pub enum ImageGcError {
    #[error("invalid capacity 0 on image filesystem")]
    InvalidCapacity,
    #[error("listing {what}: {source}")]
    List {
        what: &'static str,
        #[source]
        source: tonic::Status,
    },
    #[error("image filesystem stats: {0}")]
    FsStats(String),
}

/// Upstream's GarbageCollect decisions over the records (after [`detect_images`]), the images in
/// use, the filesystem stats, the policy, the time now and when the kubelet's GC began.
pub fn plan(
    records: &HashMap<String, ImageRecord>,
    in_use: &HashSet<String>,
    fs: FsStats,
    policy: &ImageGcPolicy,
    now: SystemTime,
    began: SystemTime,
) -> Result<ImageGcPlan, ImageGcError> {
    let age = |t: SystemTime| now.duration_since(t).unwrap_or_default();
    // Eviction order: evictable images, least recently used first (never used sorts first),
    // then first detected first; the ID breaks remaining ties so the order is stable.
    let mut order: Vec<(&String, &ImageRecord)> = records
        .iter()
        .filter(|(id, r)| !in_use.contains(*id) && !r.pinned)
        .collect();
    order.sort_by(|a, b| {
        (a.1.last_used, a.1.first_detected, a.0).cmp(&(b.1.last_used, b.1.first_detected, b.0))
    });

    let mut out = ImageGcPlan::default();
    if !policy.max_age.is_zero() && age(began) > policy.max_age {
        order.retain(|(id, r)| {
            let unused_for = r.last_used.map_or(Duration::MAX, age);
            if unused_for > policy.max_age {
                out.remove_old.push((*id).clone());
                false
            } else {
                true
            }
        });
    }

    if fs.capacity == 0 {
        return Err(ImageGcError::InvalidCapacity);
    }
    let capacity = u128::from(fs.capacity);
    let available = u128::from(fs.available.min(fs.capacity));
    out.usage_percent = 100 - (available * 100 / capacity) as i32;
    if out.usage_percent < policy.high_threshold_percent {
        return Ok(out);
    }
    let target = capacity * (100 - policy.low_threshold_percent.clamp(0, 100) as u128) / 100;
    out.bytes_to_free = target.saturating_sub(available) as u64;
    for (id, r) in order {
        if out.bytes_freed >= out.bytes_to_free {
            break;
        }
        if r.last_used.is_some_and(|t| t >= now) || age(r.first_detected) < policy.min_age {
            continue;
        }
        out.remove_for_space.push(id.clone());
        out.bytes_freed += r.size;
    }
    Ok(out)
}

/// Reads the image filesystem's stats (injected in tests).
pub type FsStatsReader = Arc<dyn Fn() -> Result<FsStats, String> + Send + Sync>;

/// The image garbage collector: the runtime, the policy, the records.
pub struct ImageGcManager {
    runtime: Runtime,
    policy: ImageGcPolicy,
    records: Mutex<HashMap<String, ImageRecord>>,
    began: SystemTime,
    clock: Arc<dyn Fn() -> SystemTime + Send + Sync>,
    fs_stats: Option<FsStatsReader>,
}

impl ImageGcManager {
    pub fn new(runtime: Runtime, policy: ImageGcPolicy) -> Self {
        ImageGcManager {
            runtime,
            policy,
            records: Mutex::new(HashMap::new()),
            began: SystemTime::now(),
            clock: Arc::new(SystemTime::now),
            fs_stats: None,
        }
    }

    /// The same with an injected clock (ages and last-used times); GC counts as begun now.
    pub fn with_clock(mut self, clock: Arc<dyn Fn() -> SystemTime + Send + Sync>) -> Self {
        self.began = clock();
        self.clock = clock;
        self
    }

    /// The same with an injected filesystem reading instead of the runtime's mountpoint.
    pub fn with_fs_stats(mut self, reader: FsStatsReader) -> Self {
        self.fs_stats = Some(reader);
        self
    }

    /// What the kubelet remembers of the images (a copy).
    pub fn records(&self) -> HashMap<String, ImageRecord> {
        self.records.lock().clone()
    }

    /// Runs [`ImageGcManager::garbage_collect`] every [`IMAGE_GC_PERIOD`], forever; the first
    /// round detects only, so images already on disk start their minimum age now.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(IMAGE_GC_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        if let Err(e) = self.detect().await {
            tracing::warn!("image garbage collection: {e}");
        }
        loop {
            tick.tick().await;
            match self.garbage_collect().await {
                Ok(plan) => {
                    if let Some(m) = plan.shortfall() {
                        tracing::warn!(reason = IMAGE_GC_FAILED, "{m}");
                    }
                }
                Err(e) => tracing::warn!(
                    reason = IMAGE_GC_FAILED,
                    "image garbage collection failed: {e}"
                ),
            }
        }
    }

    /// Lists images and containers and updates the records; returns the images in use.
    pub async fn detect(&self) -> Result<HashSet<String>, ImageGcError> {
        let images = self
            .runtime
            .list_images(None)
            .await
            .map_err(|source| ImageGcError::List {
                what: "images",
                source,
            })?;
        let containers =
            self.runtime
                .list_containers(None)
                .await
                .map_err(|source| ImageGcError::List {
                    what: "containers",
                    source,
                })?;
        let in_use = images_in_use(&images, &containers);
        detect_images(&mut self.records.lock(), &images, &in_use, (self.clock)());
        Ok(in_use)
    }

    /// One round: detect, plan, remove. `bytes_freed` of the result counts what was removed
    /// for space successfully; a failed removal is logged and the round goes on.
    pub async fn garbage_collect(&self) -> Result<ImageGcPlan, ImageGcError> {
        let in_use = self.detect().await?;
        let fs = self.image_fs_stats().await?;
        let now = (self.clock)();
        let records = self.records();
        let mut plan = plan(&records, &in_use, fs, &self.policy, now, self.began)?;
        plan.remove_old = self.remove(&plan.remove_old).await;
        plan.remove_for_space = self.remove(&plan.remove_for_space).await;
        plan.bytes_freed = plan
            .remove_for_space
            .iter()
            .map(|id| records.get(id).map_or(0, |r| r.size))
            .sum();
        Ok(plan)
    }

    /// Removes images; returns those removed (or already gone).
    async fn remove(&self, ids: &[String]) -> Vec<String> {
        let mut removed = Vec::new();
        for id in ids {
            match self
                .runtime
                .remove_image(crate::runtime::image_spec(id))
                .await
            {
                Ok(()) => tracing::info!(image = %id, "removed unused image"),
                Err(e) if e.code() == tonic::Code::NotFound => {}
                Err(e) => {
                    tracing::warn!(image = %id, "removing unused image: {e}");
                    continue;
                }
            }
            self.records.lock().remove(id);
            removed.push(id.clone());
        }
        removed
    }

    /// The image filesystem's size and free space: the injected reader's, or `statfs` of the
    /// mountpoint the runtime reports in ImageFsInfo.
    pub async fn image_fs_stats(&self) -> Result<FsStats, ImageGcError> {
        if let Some(r) = &self.fs_stats {
            return r().map_err(ImageGcError::FsStats);
        }
        let info = self
            .runtime
            .image_fs_info()
            .await
            .map_err(|e| ImageGcError::FsStats(e.to_string()))?;
        let mountpoint = info
            .image_filesystems
            .first()
            .and_then(|f| f.fs_id.as_ref())
            .map(|id| id.mountpoint.clone())
            .filter(|m| !m.is_empty())
            .ok_or_else(|| {
                ImageGcError::FsStats("the runtime reports no image filesystem".into())
            })?;
        tokio::task::spawn_blocking(move || {
            let st = nix::sys::statvfs::statvfs(mountpoint.as_str())
                .map_err(|e| format!("statfs {mountpoint}: {e}"))?;
            let frsize = st.fragment_size() as u64;
            Ok(FsStats {
                capacity: st.blocks() as u64 * frsize,
                available: st.blocks_available() as u64 * frsize,
            })
        })
        .await
        .map_err(|e| ImageGcError::FsStats(e.to_string()))?
        .map_err(ImageGcError::FsStats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn image(id: &str, tag: &str, size: u64) -> pb::Image {
        pb::Image {
            id: id.into(),
            repo_tags: vec![tag.into()],
            repo_digests: vec![format!("{tag}@sha256:{id}")],
            size,
            ..Default::default()
        }
    }

    fn rec(first: u64, last: Option<u64>, size: u64) -> ImageRecord {
        ImageRecord {
            first_detected: t(first),
            last_used: last.map(t),
            size,
            pinned: false,
        }
    }

    fn policy() -> ImageGcPolicy {
        ImageGcPolicy::default()
    }

    /// 1000 bytes, `used` of them in use.
    fn fs(used: u64) -> FsStats {
        FsStats {
            capacity: 1000,
            available: 1000 - used,
        }
    }

    #[test]
    fn in_use_by_ref_id_spec_tag_or_digest() {
        let images = vec![
            image("a", "docker.io/library/a:1", 1),
            image("b", "docker.io/library/b:1", 1),
            image("c", "docker.io/library/c:1", 1),
            image("d", "docker.io/library/d:1", 1),
            image("e", "docker.io/library/e:1", 1),
        ];
        let c = |image_ref: &str, image_id: &str, spec: &str| pb::Container {
            image_ref: image_ref.into(),
            image_id: image_id.into(),
            image: Some(pb::ImageSpec {
                image: spec.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let containers = vec![
            c("a", "", ""),
            c("", "b", ""),
            c("", "", "docker.io/library/c:1"),
            c("docker.io/library/d:1@sha256:d", "", ""),
        ];
        let mut used: Vec<String> = images_in_use(&images, &containers).into_iter().collect();
        used.sort();
        assert_eq!(used, vec!["a", "b", "c", "d"]);
    }

    #[test]
    fn detection_keeps_first_seen_and_updates_last_used() {
        let mut records = HashMap::new();
        let images = vec![image("a", "a", 10), image("b", "b", 20)];
        detect_images(&mut records, &images, &HashSet::from(["a".into()]), t(100));
        detect_images(&mut records, &images, &HashSet::new(), t(200));
        assert_eq!(records["a"], rec(100, Some(100), 10));
        assert_eq!(records["b"], rec(100, None, 20));
        detect_images(
            &mut records,
            &images[1..],
            &HashSet::from(["b".into()]),
            t(300),
        );
        assert_eq!(records.len(), 1, "a record for a removed image is dropped");
        assert_eq!(records["b"], rec(100, Some(300), 20));
    }

    #[test]
    fn below_the_high_threshold_nothing_goes() {
        let records = HashMap::from([("a".to_string(), rec(0, None, 500))]);
        // Upstream's integer percent: 100 - available * 100 / capacity.
        let p = plan(&records, &HashSet::new(), fs(840), &policy(), t(1000), t(0)).unwrap();
        assert_eq!(p.usage_percent, 84);
        assert!(p.remove_for_space.is_empty());
        assert_eq!(p.bytes_to_free, 0);
        let p = plan(&records, &HashSet::new(), fs(850), &policy(), t(1000), t(0)).unwrap();
        assert_eq!(p.usage_percent, 85);
        assert_eq!(p.bytes_to_free, 50);
        assert_eq!(p.remove_for_space, vec!["a"]);
    }

    #[test]
    fn frees_down_to_the_low_threshold_least_recently_used_first() {
        let records = HashMap::from([
            ("used".to_string(), rec(0, Some(900), 300)),
            ("old-use".to_string(), rec(0, Some(100), 40)),
            ("never".to_string(), rec(50, None, 30)),
            ("mid-use".to_string(), rec(0, Some(500), 40)),
            ("new-use".to_string(), rec(0, Some(800), 40)),
            ("young".to_string(), rec(990, None, 500)),
            (
                "pinned".to_string(),
                ImageRecord {
                    pinned: true,
                    ..rec(0, None, 500)
                },
            ),
        ]);
        let in_use = HashSet::from(["used".to_string()]);
        // 900 of 1000 used: 90% >= 85 -> free to 80%: 100 bytes.
        let p = plan(&records, &in_use, fs(900), &policy(), t(1000), t(0)).unwrap();
        assert_eq!(p.usage_percent, 90);
        assert_eq!(p.bytes_to_free, 100);
        // Never used first, then by last use; "young" (< 2m) and "pinned" and "used" never.
        assert_eq!(p.remove_for_space, vec!["never", "old-use", "mid-use"]);
        assert_eq!(p.bytes_freed, 110);
        assert!(p.shortfall().is_none());

        // Needing more than is eligible: everything eligible goes and the shortfall is reported.
        let p = plan(&records, &in_use, fs(1000), &policy(), t(1000), t(0)).unwrap();
        assert_eq!(
            p.remove_for_space,
            vec!["never", "old-use", "mid-use", "new-use"]
        );
        assert_eq!(
            p.shortfall().unwrap(),
            "Failed to garbage collect required amount of images. Attempted to free 200 bytes, but only found 150 bytes eligible to free."
        );
    }

    #[test]
    fn maximum_age_removes_unused_images_once_the_kubelet_is_old_enough() {
        let records = HashMap::from([
            ("stale".to_string(), rec(0, Some(100), 1)),
            ("fresh".to_string(), rec(0, Some(950), 1)),
            ("used".to_string(), rec(0, Some(100), 1)),
        ]);
        let in_use = HashSet::from(["used".to_string()]);
        let pol = ImageGcPolicy {
            max_age: Duration::from_secs(600),
            ..policy()
        };
        let p = plan(&records, &in_use, fs(10), &pol, t(1000), t(0)).unwrap();
        assert_eq!(p.remove_old, vec!["stale"]);
        assert!(p.remove_for_space.is_empty());
        // The kubelet started 500 s ago: not yet.
        let p = plan(&records, &in_use, fs(10), &pol, t(1000), t(500)).unwrap();
        assert!(p.remove_old.is_empty());
    }

    #[test]
    fn zero_capacity_is_an_error() {
        let e = plan(
            &HashMap::new(),
            &HashSet::new(),
            FsStats {
                capacity: 0,
                available: 0,
            },
            &policy(),
            t(0),
            t(0),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "invalid capacity 0 on image filesystem");
    }
}

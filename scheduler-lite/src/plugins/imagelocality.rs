//! ImageLocality: nodes that already have the pod's images score higher, each image counted by
//! its size scaled by how widely it is spread over the cluster (so that one node holding a rare
//! image does not attract every pod), between upstream's 23 MB and 1000 MB-per-container bounds.

use std::sync::Arc;

use crate::framework::*;
use crate::nodeinfo::{normalized_image_name, NodeInfo, PodInfo, Snapshot};

pub const NAME: &str = "ImageLocality";
const MB: i64 = 1024 * 1024;
const MIN_THRESHOLD: i64 = 23 * MB;
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

pub fn register(r: &mut Registry) {
    r.insert(
        NAME,
        PluginInfo {
            factory: Arc::new(|_, _| Ok(Arc::new(ImageLocality) as Arc<dyn Plugin>)),
            points: &["preScore", "score"],
            validate_args: |_| Ok(()),
        },
    );
}

pub struct ImageLocality;

/// The pod's images with the number of nodes that have each, and the cluster's node count.
#[derive(Clone)]
struct PreScoreState {
    images: Vec<(String, usize)>,
    containers: i64,
    total_nodes: usize,
}

impl Plugin for ImageLocality {
    fn name(&self) -> &'static str {
        NAME
    }
    fn pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl PreScorePlugin for ImageLocality {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &[Arc<NodeInfo>],
        snap: &Snapshot,
    ) -> Status {
        let spec = pod.spec();
        let mut images = Vec::new();
        let mut containers = 0;
        for c in spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
        {
            containers += 1;
            if let Some(img) = c.image.as_deref() {
                let n = normalized_image_name(img);
                let count = snap.image_nodes.get(&n).copied().unwrap_or(0);
                images.push((n, count));
            }
        }
        state.write(
            NAME,
            PreScoreState {
                images,
                containers,
                total_nodes: snap.nodes.len(),
            },
        );
        Status::success()
    }
}

impl ScorePlugin for ImageLocality {
    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let s = state
            .read::<PreScoreState>(NAME)
            .ok_or_else(|| Status::error("ImageLocality: no PreScore state"))?;
        if s.total_nodes == 0 {
            return Ok(0);
        }
        let mut sum = 0i64;
        for (img, count) in &s.images {
            if let Some(size) = node.images.get(img) {
                sum += (*size as f64 * (*count as f64 / s.total_nodes as f64)) as i64;
            }
        }
        let max = MAX_CONTAINER_THRESHOLD * s.containers.max(1);
        let sum = sum.clamp(MIN_THRESHOLD, max);
        Ok(MAX_NODE_SCORE * (sum - MIN_THRESHOLD) / (max - MIN_THRESHOLD))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::*;
    use k8s_openapi::api::core::v1::{Container, ContainerImage, Node};

    fn image_node(name: &str, images: &[(&[&str], i64)]) -> Node {
        let mut n = node(name, 0, 0);
        n.status.as_mut().unwrap().images = Some(
            images
                .iter()
                .map(|(names, size)| ContainerImage {
                    names: Some(names.iter().map(|s| s.to_string()).collect()),
                    size_bytes: Some(size * MB),
                })
                .collect(),
        );
        n
    }

    fn pod_with(images: &[&str]) -> k8s_openapi::api::core::v1::Pod {
        let mut p = pod("p");
        p.spec.as_mut().unwrap().containers = images
            .iter()
            .map(|i| Container {
                name: i.replace(['/', '.', ':'], "-"),
                image: Some(i.to_string()),
                ..Default::default()
            })
            .collect();
        p
    }

    /// Upstream TestImageLocalityPriority.
    #[test]
    fn scores() {
        let nodes = || {
            vec![
                image_node(
                    "machine1",
                    &[
                        (&["gcr.io/40:latest", "gcr.io/40:v1"], 40),
                        (&["gcr.io/300:latest", "gcr.io/300:v1"], 300),
                        (&["gcr.io/2000:latest"], 2000),
                    ],
                ),
                image_node(
                    "machine2",
                    &[
                        (&["gcr.io/250:latest"], 250),
                        (&["gcr.io/10:latest", "gcr.io/10:v1"], 10),
                    ],
                ),
            ]
        };
        let run = |p| {
            let snap = snapshot(nodes(), vec![]);
            run_scores_on(&ImageLocality, p, &snap, &snap.nodes.clone())
        };
        // "two images spread on two nodes, prefer the larger image one":
        // machine1 40M/2 < 23M → 0; machine2 100 * (250M/2 − 23M) / (2000M − 23M) = 5.
        assert_eq!(run(pod_with(&["gcr.io/40", "gcr.io/250"])), [0, 5]);
        // "two images on one node, prefer this node": 100 * ((40M + 300M)/2 − 23M) / (2000M − 23M) = 7.
        assert_eq!(run(pod_with(&["gcr.io/40", "gcr.io/300"])), [7, 0]);
        // Tagged names match as given ("gcr.io/300:v1").
        assert_eq!(run(pod_with(&["gcr.io/40:v1", "gcr.io/300:v1"])), [7, 0]);
    }
}

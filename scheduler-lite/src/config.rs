//! KubeSchedulerConfiguration (`kubescheduler.config.k8s.io/v1`): the scheduler's configuration
//! file, read strictly (unknown fields are errors, as upstream's strict decoding) into structs
//! named after upstream's, then defaulted as upstream's `SetDefaults_KubeSchedulerConfiguration`
//! does: one `default-scheduler` profile, the default plugin set with its weights (expanded from
//! `multiPoint`), `parallelism` 16, `percentageOfNodesToScore` adaptive (0), leader election on a
//! `kube-system/kube-scheduler` Lease. k8s-openapi carries no type for it, hence our own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub const API_VERSION: &str = "kubescheduler.config.k8s.io/v1";
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading scheduler config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("decoding scheduler config {}: {field}: {message}", path.display())]
    Decode {
        path: PathBuf,
        field: String,
        message: String,
    },
    #[error("invalid scheduler config {}: {field}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeSchedulerConfiguration {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub parallelism: Option<i32>,
    pub leader_election: Option<LeaderElectionConfiguration>,
    pub client_connection: Option<serde_json::Value>,
    pub percentage_of_nodes_to_score: Option<i32>,
    pub pod_initial_backoff_seconds: Option<i64>,
    pub pod_max_backoff_seconds: Option<i64>,
    #[serde(default)]
    pub profiles: Vec<KubeSchedulerProfile>,
    #[serde(default)]
    pub extenders: Vec<serde_json::Value>,
    pub delay_cache_until_active: Option<bool>,
    pub enable_profiling: Option<bool>,
    pub enable_contention_profiling: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaderElectionConfiguration {
    pub leader_elect: Option<bool>,
    #[serde(default, with = "machinery::duration::serde_opt")]
    pub lease_duration: Option<Duration>,
    #[serde(default, with = "machinery::duration::serde_opt")]
    pub renew_deadline: Option<Duration>,
    #[serde(default, with = "machinery::duration::serde_opt")]
    pub retry_period: Option<Duration>,
    pub resource_lock: Option<String>,
    pub resource_name: Option<String>,
    pub resource_namespace: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubeSchedulerProfile {
    pub scheduler_name: Option<String>,
    pub percentage_of_nodes_to_score: Option<i32>,
    pub plugins: Option<Plugins>,
    #[serde(default)]
    pub plugin_config: Vec<PluginConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Plugins {
    pub pre_enqueue: Option<PluginSet>,
    pub queue_sort: Option<PluginSet>,
    pub pre_filter: Option<PluginSet>,
    pub filter: Option<PluginSet>,
    pub post_filter: Option<PluginSet>,
    pub pre_score: Option<PluginSet>,
    pub score: Option<PluginSet>,
    pub reserve: Option<PluginSet>,
    pub permit: Option<PluginSet>,
    pub pre_bind: Option<PluginSet>,
    pub bind: Option<PluginSet>,
    pub post_bind: Option<PluginSet>,
    pub multi_point: Option<PluginSet>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginSet {
    #[serde(default)]
    pub enabled: Vec<Plugin>,
    #[serde(default)]
    pub disabled: Vec<Plugin>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Plugin {
    pub name: String,
    pub weight: Option<i32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginConfig {
    pub name: String,
    #[serde(default)]
    pub args: serde_json::Value,
}

/// `NodeResourcesFitArgs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeResourcesFitArgs {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    #[serde(default)]
    pub ignored_resources: Vec<String>,
    #[serde(default)]
    pub ignored_resource_groups: Vec<String>,
    pub scoring_strategy: Option<ScoringStrategy>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScoringStrategy {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    #[serde(default)]
    pub resources: Vec<ResourceSpec>,
    pub requested_to_capacity_ratio: Option<RequestedToCapacityRatioParam>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceSpec {
    pub name: String,
    #[serde(default)]
    pub weight: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestedToCapacityRatioParam {
    #[serde(default)]
    pub shape: Vec<UtilizationShapePoint>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UtilizationShapePoint {
    pub utilization: i32,
    pub score: i32,
}

/// `NodeResourcesBalancedAllocationArgs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeResourcesBalancedAllocationArgs {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    #[serde(default)]
    pub resources: Vec<ResourceSpec>,
}

/// `PodTopologySpreadArgs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodTopologySpreadArgs {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    #[serde(default)]
    pub default_constraints: Vec<k8s_openapi::api::core::v1::TopologySpreadConstraint>,
    pub defaulting_type: Option<String>,
}

/// `InterPodAffinityArgs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InterPodAffinityArgs {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub hard_pod_affinity_weight: Option<i32>,
    pub ignore_preferred_terms_of_existing_pods: Option<bool>,
}

/// `NodeAffinityArgs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeAffinityArgs {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub added_affinity: Option<k8s_openapi::api::core::v1::NodeAffinity>,
}

/// `DefaultPreemptionArgs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DefaultPreemptionArgs {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub min_candidate_nodes_percentage: Option<i32>,
    pub min_candidate_nodes_absolute: Option<i32>,
}

/// A profile after defaulting: the plugins per extension point (in order, with weights for
/// Score) and each plugin's raw args.
#[derive(Debug, Clone)]
pub struct Profile {
    pub scheduler_name: String,
    pub percentage_of_nodes_to_score: Option<i32>,
    pub points: BTreeMap<&'static str, Vec<(String, i32)>>,
    pub args: BTreeMap<String, serde_json::Value>,
}

/// The configuration after defaulting.
#[derive(Debug, Clone)]
pub struct Config {
    pub parallelism: usize,
    pub percentage_of_nodes_to_score: i32,
    pub pod_initial_backoff: Duration,
    pub pod_max_backoff: Duration,
    pub leader_elect: bool,
    pub lease_name: String,
    pub lease_namespace: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    pub profiles: Vec<Profile>,
}

/// The extension points a profile lists plugins for (upstream's `Plugins` fields).
pub const EXTENSION_POINTS: [&str; 12] = [
    "preEnqueue",
    "queueSort",
    "preFilter",
    "filter",
    "postFilter",
    "preScore",
    "score",
    "reserve",
    "permit",
    "preBind",
    "bind",
    "postBind",
];

/// Upstream's default plugins (v1 `getDefaultPlugins`), all under `multiPoint`, with the score
/// weights of the default profile.
pub const DEFAULT_PLUGINS: [(&str, i32); 17] = [
    ("SchedulingGates", 0),
    ("PrioritySort", 0),
    ("NodeUnschedulable", 0),
    ("NodeName", 0),
    ("TaintToleration", 3),
    ("NodeAffinity", 2),
    ("NodePorts", 0),
    ("NodeResourcesFit", 1),
    ("VolumeRestrictions", 0),
    ("VolumeBinding", 0),
    ("VolumeZone", 0),
    ("PodTopologySpread", 2),
    ("InterPodAffinity", 2),
    ("DefaultPreemption", 0),
    ("NodeResourcesBalancedAllocation", 1),
    ("ImageLocality", 1),
    ("DefaultBinder", 0),
];

impl Default for Config {
    fn default() -> Self {
        Config::from_file_contents(KubeSchedulerConfiguration::default())
            .expect("the default configuration is valid")
    }
}

impl Config {
    /// Reads, decodes, defaults and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let de = serde_yaml::Deserializer::from_str(&text);
        let raw: KubeSchedulerConfiguration =
            serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Decode {
                path: path.into(),
                field: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            path: path.into(),
            field: field.into(),
            message,
        };
        match raw.api_version.as_deref() {
            Some(API_VERSION) => {}
            other => {
                return Err(invalid(
                    "apiVersion",
                    format!("must be {API_VERSION:?}, got {other:?}"),
                ))
            }
        }
        if raw.kind.as_deref() != Some("KubeSchedulerConfiguration") {
            return Err(invalid(
                "kind",
                format!("must be \"KubeSchedulerConfiguration\", got {:?}", raw.kind),
            ));
        }
        Config::from_file_contents(raw).map_err(|(field, message)| invalid(&field, message))
    }

    /// Defaults and validates a decoded configuration; errors name the field.
    pub fn from_file_contents(raw: KubeSchedulerConfiguration) -> Result<Config, (String, String)> {
        let parallelism = raw.parallelism.unwrap_or(16);
        if parallelism <= 0 {
            return Err((
                "parallelism".into(),
                format!("should be an integer value greater than zero, got {parallelism}"),
            ));
        }
        let pct = raw.percentage_of_nodes_to_score.unwrap_or(0);
        if !(0..=100).contains(&pct) {
            return Err((
                "percentageOfNodesToScore".into(),
                format!("not in valid range [0-100], got {pct}"),
            ));
        }
        let initial = raw.pod_initial_backoff_seconds.unwrap_or(1);
        let max = raw.pod_max_backoff_seconds.unwrap_or(10);
        if initial <= 0 {
            return Err((
                "podInitialBackoffSeconds".into(),
                "must be greater than 0".into(),
            ));
        }
        if max < initial {
            return Err((
                "podMaxBackoffSeconds".into(),
                "must be greater than or equal to PodInitialBackoffSeconds".into(),
            ));
        }
        let le = raw.leader_election.unwrap_or(LeaderElectionConfiguration {
            leader_elect: None,
            lease_duration: None,
            renew_deadline: None,
            retry_period: None,
            resource_lock: None,
            resource_name: None,
            resource_namespace: None,
        });
        if let Some(lock) = le.resource_lock.as_deref() {
            if lock != "leases" {
                return Err((
                    "leaderElection.resourceLock".into(),
                    format!("only \"leases\" is supported, got {lock:?}"),
                ));
            }
        }
        let mut profiles_raw = raw.profiles;
        if profiles_raw.is_empty() {
            profiles_raw.push(KubeSchedulerProfile::default());
        }
        let mut profiles = Vec::new();
        for (i, p) in profiles_raw.into_iter().enumerate() {
            let field = format!("profiles[{i}]");
            let profile = default_profile(p).map_err(|(f, m)| (format!("{field}.{f}"), m))?;
            if profiles
                .iter()
                .any(|o: &Profile| o.scheduler_name == profile.scheduler_name)
            {
                return Err((
                    format!("{field}.schedulerName"),
                    format!("duplicate profile {:?}", profile.scheduler_name),
                ));
            }
            profiles.push(profile);
        }
        // Upstream: every profile must use the same queue sort plugin.
        let sorts: Vec<_> = profiles
            .iter()
            .map(|p| p.points["queueSort"].clone())
            .collect();
        if sorts.windows(2).any(|w| w[0] != w[1]) {
            return Err((
                "profiles".into(),
                "queueSort must be the same for all profiles".into(),
            ));
        }
        Ok(Config {
            parallelism: parallelism as usize,
            percentage_of_nodes_to_score: pct,
            pod_initial_backoff: Duration::from_secs(initial as u64),
            pod_max_backoff: Duration::from_secs(max as u64),
            leader_elect: le.leader_elect.unwrap_or(true),
            lease_name: le.resource_name.unwrap_or_else(|| "kube-scheduler".into()),
            lease_namespace: le
                .resource_namespace
                .unwrap_or_else(|| "kube-system".into()),
            lease_duration: le.lease_duration.unwrap_or(Duration::from_secs(15)),
            renew_deadline: le.renew_deadline.unwrap_or(Duration::from_secs(10)),
            retry_period: le.retry_period.unwrap_or(Duration::from_secs(2)),
            profiles,
        })
    }
}

fn set_of<'a>(plugins: &'a Option<Plugins>, point: &str) -> Option<&'a PluginSet> {
    let p = plugins.as_ref()?;
    match point {
        "preEnqueue" => p.pre_enqueue.as_ref(),
        "queueSort" => p.queue_sort.as_ref(),
        "preFilter" => p.pre_filter.as_ref(),
        "filter" => p.filter.as_ref(),
        "postFilter" => p.post_filter.as_ref(),
        "preScore" => p.pre_score.as_ref(),
        "score" => p.score.as_ref(),
        "reserve" => p.reserve.as_ref(),
        "permit" => p.permit.as_ref(),
        "preBind" => p.pre_bind.as_ref(),
        "bind" => p.bind.as_ref(),
        "postBind" => p.post_bind.as_ref(),
        "multiPoint" => p.multi_point.as_ref(),
        _ => None,
    }
}

/// Expands a profile as upstream's `mergePlugins` + multiPoint expansion do: the default
/// multiPoint set minus `multiPoint.disabled` (`*` disables all), plus `multiPoint.enabled`, then
/// per extension point the plugins that implement it minus that point's `disabled`, plus that
/// point's `enabled` (which take precedence, in order, and override weights).
fn default_profile(p: KubeSchedulerProfile) -> Result<Profile, (String, String)> {
    let registry = crate::plugins::registry();
    let multi = set_of(&p.plugins, "multiPoint");
    let disabled_all =
        |s: Option<&PluginSet>| s.is_some_and(|s| s.disabled.iter().any(|d| d.name == "*"));
    let mut multi_list: Vec<(String, i32)> = Vec::new();
    if !disabled_all(multi) {
        for (name, w) in DEFAULT_PLUGINS {
            if multi.is_some_and(|m| m.disabled.iter().any(|d| d.name == name)) {
                continue;
            }
            multi_list.push((name.to_string(), w));
        }
    }
    if let Some(m) = multi {
        for (i, e) in m.enabled.iter().enumerate() {
            if !registry.contains_key(e.name.as_str()) {
                return Err((
                    format!("plugins.multiPoint.enabled[{i}].name"),
                    format!("plugin {:?} does not exist", e.name),
                ));
            }
            let w = e.weight.unwrap_or(0);
            if let Some(x) = multi_list.iter_mut().find(|x| x.0 == e.name) {
                if e.weight.is_some() {
                    x.1 = w;
                }
            } else {
                multi_list.push((e.name.clone(), w));
            }
        }
    }
    let mut points = BTreeMap::new();
    for point in EXTENSION_POINTS {
        let set = set_of(&p.plugins, point);
        let mut list: Vec<(String, i32)> = Vec::new();
        if let Some(s) = set {
            for (i, e) in s.enabled.iter().enumerate() {
                let Some(info) = registry.get(e.name.as_str()) else {
                    return Err((
                        format!("plugins.{point}.enabled[{i}].name"),
                        format!("plugin {:?} does not exist", e.name),
                    ));
                };
                if !info.points.contains(&point) {
                    return Err((
                        format!("plugins.{point}.enabled[{i}].name"),
                        format!("plugin {:?} does not extend {point}", e.name),
                    ));
                }
                let w = e.weight.unwrap_or_else(|| {
                    multi_list
                        .iter()
                        .find(|x| x.0 == e.name)
                        .map(|x| x.1)
                        .unwrap_or(0)
                });
                list.push((e.name.clone(), w));
            }
        }
        if !disabled_all(set) {
            for (name, w) in &multi_list {
                let info = &registry[name.as_str()];
                if !info.points.contains(&point)
                    || list.iter().any(|x| &x.0 == name)
                    || set.is_some_and(|s| s.disabled.iter().any(|d| &d.name == name))
                {
                    continue;
                }
                list.push((name.clone(), *w));
            }
        }
        if point == "score" {
            for (name, w) in list.iter_mut() {
                if *w == 0 {
                    *w = 1;
                }
                if *w < 0 || *w > 100 {
                    return Err((
                        "plugins.score".into(),
                        format!("plugin {name:?} weight {w} is not in range [1, 100]"),
                    ));
                }
            }
        }
        points.insert(point, list);
    }
    if points["queueSort"].len() != 1 {
        return Err((
            "plugins.queueSort".into(),
            format!(
                "exactly one queue sort plugin must be enabled, got {}",
                points["queueSort"].len()
            ),
        ));
    }
    if points["bind"].is_empty() {
        return Err((
            "plugins.bind".into(),
            "at least one bind plugin is needed".into(),
        ));
    }
    let mut args = BTreeMap::new();
    for (i, pc) in p.plugin_config.into_iter().enumerate() {
        let Some(info) = registry.get(pc.name.as_str()) else {
            return Err((
                format!("pluginConfig[{i}].name"),
                format!("plugin {:?} does not exist", pc.name),
            ));
        };
        if let Err(e) = (info.validate_args)(&pc.args) {
            return Err((format!("pluginConfig[{i}].args.{}", e.0), e.1));
        }
        if args.insert(pc.name.clone(), pc.args).is_some() {
            return Err((
                format!("pluginConfig[{i}].name"),
                format!("duplicate plugin config for {:?}", pc.name),
            ));
        }
    }
    Ok(Profile {
        scheduler_name: p
            .scheduler_name
            .unwrap_or_else(|| DEFAULT_SCHEDULER_NAME.into()),
        percentage_of_nodes_to_score: p.percentage_of_nodes_to_score,
        points,
        args,
    })
}

/// Decodes plugin args strictly; errors carry the field path inside the args.
pub fn decode_args<T: serde::de::DeserializeOwned + Default>(
    v: &serde_json::Value,
) -> Result<T, (String, String)> {
    if v.is_null() {
        return Ok(T::default());
    }
    serde_path_to_error::deserialize(v.clone())
        .map_err(|e| (e.path().to_string(), e.inner().to_string()))
}

/// How many nodes to find feasible before stopping (upstream `numFeasibleNodesToFind`): all of
/// them below 100 nodes or at 100 %; otherwise the percentage, adaptive when 0 (50 % minus one
/// per 125 nodes, at least 5 %), never fewer than 100.
pub fn num_feasible_nodes_to_find(percentage: i32, num_all_nodes: usize) -> usize {
    const MIN_FEASIBLE: usize = 100;
    const MIN_PERCENTAGE: i64 = 5;
    if num_all_nodes < MIN_FEASIBLE || percentage >= 100 {
        return num_all_nodes;
    }
    let mut adaptive = percentage as i64;
    if adaptive <= 0 {
        adaptive = 50 - num_all_nodes as i64 / 125;
        if adaptive < MIN_PERCENTAGE {
            adaptive = MIN_PERCENTAGE;
        }
    }
    let n = (num_all_nodes as i64 * adaptive / 100) as usize;
    n.max(MIN_FEASIBLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let f = std::env::temp_dir().join(format!("sched-cfg-{}.yaml", rand::random::<u64>()));
        std::fs::write(&f, text).unwrap();
        let r = Config::load(&f);
        let _ = std::fs::remove_file(&f);
        r
    }

    #[test]
    fn defaults_match_upstream() {
        let c = Config::default();
        assert_eq!(c.parallelism, 16);
        assert_eq!(c.profiles.len(), 1);
        let p = &c.profiles[0];
        assert_eq!(p.scheduler_name, "default-scheduler");
        let score: Vec<_> = p.points["score"]
            .iter()
            .map(|(n, w)| format!("{n}={w}"))
            .collect();
        assert_eq!(
            score,
            [
                "TaintToleration=3",
                "NodeAffinity=2",
                "NodeResourcesFit=1",
                "PodTopologySpread=2",
                "InterPodAffinity=2",
                "NodeResourcesBalancedAllocation=1",
                "ImageLocality=1"
            ]
        );
        assert_eq!(p.points["bind"], [("DefaultBinder".to_string(), 0)]);
        assert!(c.leader_elect);
        assert_eq!(c.lease_name, "kube-scheduler");
    }

    #[test]
    fn adaptive_percentage() {
        assert_eq!(num_feasible_nodes_to_find(0, 50), 50);
        assert_eq!(num_feasible_nodes_to_find(0, 1000), 420);
        assert_eq!(num_feasible_nodes_to_find(0, 5000), 500);
        assert_eq!(num_feasible_nodes_to_find(0, 6000), 300);
        assert_eq!(num_feasible_nodes_to_find(0, 200), 100);
        assert_eq!(num_feasible_nodes_to_find(10, 5000), 500);
    }

    #[test]
    fn profiles_plugins_and_args() {
        let c = load(
            r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
parallelism: 4
percentageOfNodesToScore: 30
leaderElection:
  leaderElect: false
profiles:
- schedulerName: default-scheduler
- schedulerName: bin-packer
  plugins:
    multiPoint:
      disabled:
      - name: ImageLocality
    score:
      disabled:
      - name: NodeResourcesBalancedAllocation
      enabled:
      - name: NodeResourcesFit
        weight: 5
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
        resources:
        - name: cpu
          weight: 1
"#,
        )
        .unwrap();
        assert_eq!(c.parallelism, 4);
        assert!(!c.leader_elect);
        let p = &c.profiles[1];
        let score: Vec<_> = p.points["score"]
            .iter()
            .map(|(n, w)| format!("{n}={w}"))
            .collect();
        assert_eq!(
            score,
            [
                "NodeResourcesFit=5",
                "TaintToleration=3",
                "NodeAffinity=2",
                "PodTopologySpread=2",
                "InterPodAffinity=2"
            ]
        );
        assert!(p.args.contains_key("NodeResourcesFit"));
    }

    #[test]
    fn bad_config_names_file_and_field() {
        let e = load(
            "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nprofiles:\n- schedulerName: x\n  plugins:\n    score:\n      enabled:\n      - name: Bogus\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("profiles[0].plugins.score.enabled[0].name"),
            "{e}"
        );
        assert!(e.contains("sched-cfg-"), "{e}");
        let e = load("apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nparallelizm: 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("parallelizm"), "{e}");
        let e = load(
            "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nprofiles:\n- pluginConfig:\n  - name: NodeResourcesFit\n    args:\n      scoringStrategy:\n        type: Fancy\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("pluginConfig[0].args.scoringStrategy.type"),
            "{e}"
        );
    }
}

//! The Job's `podFailurePolicy` (upstream `pkg/controller/job/pod_failure_policy.go`): the first
//! rule whose `onExitCodes` or `onPodConditions` matches a failed pod decides what its failure
//! means — fail the whole Job (`FailJob`), fail its index (`FailIndex`), not count it against the
//! backoff limit (`Ignore`) or count it as usual (`Count`). No matching rule counts it.

use k8s_openapi::api::batch::v1::{PodFailurePolicy, PodFailurePolicyRule};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// What a rule says to do with a failed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Fail the Job, with the condition message.
    FailJob(String),
    FailIndex,
    Ignore,
    Count,
}

impl Action {
    /// Whether the failure counts against backoffLimit (upstream's `countFailed`).
    pub fn counts(&self) -> bool {
        !matches!(self, Action::Ignore)
    }
}

/// The action of the first matching rule; `None` when no rule matches (the pod counts).
pub fn match_pod(policy: &PodFailurePolicy, pod: &Pod) -> Option<Action> {
    let status = pod.status.as_ref()?;
    for (index, rule) in policy.rules.iter().enumerate() {
        if let Some(req) = &rule.on_exit_codes {
            let found = status
                .container_statuses
                .iter()
                .flatten()
                .chain(status.init_container_statuses.iter().flatten())
                .find_map(|c| matches_exit_codes(req, c));
            if let Some((container, code)) = found {
                return Some(action(
                    rule,
                    format!(
                        "Container {container} for pod {}/{} failed with exit code {code} matching {} rule at index {index}",
                        pod.metadata.namespace.as_deref().unwrap_or(""),
                        pod.metadata.name.as_deref().unwrap_or(""),
                        rule.action
                    ),
                ));
            }
        } else if let Some(patterns) = &rule.on_pod_conditions {
            let conds = status.conditions.as_deref().unwrap_or(&[]);
            let hit = patterns.iter().find(|p| {
                conds
                    .iter()
                    .any(|c| c.type_ == p.type_ && c.status == p.status)
            });
            if let Some(p) = hit {
                return Some(action(
                    rule,
                    format!(
                        "Pod {}/{} has condition {} matching {} rule at index {index}",
                        pod.metadata.namespace.as_deref().unwrap_or(""),
                        pod.metadata.name.as_deref().unwrap_or(""),
                        p.type_,
                        rule.action
                    ),
                ));
            }
        }
    }
    None
}

fn action(rule: &PodFailurePolicyRule, message: String) -> Action {
    match rule.action.as_str() {
        "FailJob" => Action::FailJob(message),
        "FailIndex" => Action::FailIndex,
        "Ignore" => Action::Ignore,
        _ => Action::Count,
    }
}

/// The (container, exit code) a requirement matches: a terminated container with a non-zero code
/// that is (`In`) or is not (`NotIn`) among the values.
fn matches_exit_codes(
    req: &k8s_openapi::api::batch::v1::PodFailurePolicyOnExitCodesRequirement,
    c: &ContainerStatus,
) -> Option<(String, i32)> {
    if req.container_name.as_ref().is_some_and(|n| *n != c.name) {
        return None;
    }
    let code = c.state.as_ref()?.terminated.as_ref()?.exit_code;
    if code == 0 {
        return None;
    }
    let listed = req.values.contains(&code);
    let hit = match req.operator.as_str() {
        "In" => listed,
        "NotIn" => !listed,
        _ => false,
    };
    hit.then(|| (c.name.clone(), code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{
        PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyOnPodConditionsPattern,
    };
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, PodCondition, PodStatus,
    };

    fn failed_pod(code: i32, conditions: &[&str]) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("p".into());
        p.metadata.namespace = Some("ns".into());
        p.status = Some(PodStatus {
            phase: Some("Failed".into()),
            container_statuses: Some(vec![ContainerStatus {
                name: "main".into(),
                state: Some(ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: code,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            conditions: Some(
                conditions
                    .iter()
                    .map(|t| PodCondition {
                        type_: t.to_string(),
                        status: "True".into(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        });
        p
    }

    fn policy() -> PodFailurePolicy {
        PodFailurePolicy {
            rules: vec![
                PodFailurePolicyRule {
                    action: "Ignore".into(),
                    on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                        type_: "DisruptionTarget".into(),
                        status: "True".into(),
                    }]),
                    ..Default::default()
                },
                PodFailurePolicyRule {
                    action: "FailJob".into(),
                    on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                        container_name: Some("main".into()),
                        operator: "In".into(),
                        values: vec![42],
                    }),
                    ..Default::default()
                },
                PodFailurePolicyRule {
                    action: "Count".into(),
                    on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                        container_name: None,
                        operator: "NotIn".into(),
                        values: vec![1],
                    }),
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let p = policy();
        assert_eq!(
            match_pod(&p, &failed_pod(42, &[])),
            Some(Action::FailJob(
                "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 1"
                    .into()
            ))
        );
        assert_eq!(
            match_pod(&p, &failed_pod(42, &["DisruptionTarget"])),
            Some(Action::Ignore)
        );
        assert!(match_pod(&p, &failed_pod(3, &[])).is_some_and(|a| a == Action::Count));
        // Exit code 1 is excluded by NotIn; nothing matches, so the failure counts.
        assert_eq!(match_pod(&p, &failed_pod(1, &[])), None);
        // Exit code 0 never matches.
        assert_eq!(match_pod(&p, &failed_pod(0, &[])), None);
    }
}

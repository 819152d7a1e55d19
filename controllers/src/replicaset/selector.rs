//! Label selectors as the workload controllers evaluate them (apimachinery's
//! `metav1.LabelSelectorAsSelector` and `labels.SelectorFromSet`): `matchLabels` and the
//! `In`/`NotIn`/`Exists`/`DoesNotExist` expressions, all of which must hold.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// One `matchExpressions` requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed selector; [`Selector::default`] matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    labels: BTreeMap<String, String>,
    requirements: Vec<Requirement>,
    /// A nil selector (upstream's `labels.Nothing()`): matches nothing.
    nothing: bool,
}

impl Selector {
    /// `SelectorFromSet`: every label of `set` must be present with its value.
    pub fn from_map(set: &BTreeMap<String, String>) -> Selector {
        Selector {
            labels: set.clone(),
            ..Default::default()
        }
    }

    /// A selector that matches nothing.
    pub fn nothing() -> Selector {
        Selector {
            nothing: true,
            ..Default::default()
        }
    }

    /// `LabelSelectorAsSelector`; `None` (a nil selector) matches nothing.
    pub fn from_label_selector(sel: Option<&LabelSelector>) -> Result<Selector, String> {
        let Some(sel) = sel else {
            return Ok(Selector::nothing());
        };
        let mut out = Selector {
            labels: sel.match_labels.clone().unwrap_or_default(),
            ..Default::default()
        };
        for e in sel.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            let key = e.key.clone();
            out.requirements.push(match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(format!(
                        "for 'in', 'notin' operators, values set can't be empty (key {key:?})"
                    ))
                }
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                op => return Err(format!("{op:?} is not a valid label selector operator")),
            });
        }
        Ok(out)
    }

    /// Whether the selector selects everything (an empty, non-nil selector).
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.labels.is_empty() && self.requirements.is_empty()
    }

    /// Whether `labels` satisfy the selector.
    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        if self.nothing {
            return false;
        }
        let empty = BTreeMap::new();
        let labels = labels.unwrap_or(&empty);
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.requirements.iter().all(|r| match r {
                Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
                Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
                Requirement::Exists(k) => labels.contains_key(k),
                Requirement::DoesNotExist(k) => !labels.contains_key(k),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn match_labels_and_expressions_must_all_hold() {
        let sel = Selector::from_label_selector(Some(&LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        }))
        .unwrap();
        assert!(sel.matches(Some(&labels(&[("app", "web"), ("tier", "a")]))));
        assert!(!sel.matches(Some(&labels(&[("app", "web"), ("tier", "c")]))));
        assert!(!sel.matches(Some(&labels(&[
            ("app", "web"),
            ("tier", "a"),
            ("canary", "1")
        ]))));
        assert!(!sel.matches(None));
        assert!(!Selector::from_label_selector(None).unwrap().matches(None));
        assert!(
            Selector::from_label_selector(Some(&LabelSelector::default()))
                .unwrap()
                .is_empty()
        );
        let bad = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "k".into(),
                operator: "Near".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert!(Selector::from_label_selector(Some(&bad)).is_err());
    }
}

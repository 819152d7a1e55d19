//! Label selectors, node selectors and tolerations, compiled once per pod: apimachinery's
//! `labels.Selector` (from a `LabelSelector`), component-helpers' `nodeaffinity` matching
//! (`NodeSelectorTerm`s with `Gt`/`Lt` and `matchFields` on `metadata.name`) and
//! `Toleration.ToleratesTaint`. Plugins match thousands of nodes and pods per cycle, so matching
//! must not allocate.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    Gt(i64),
    Lt(i64),
}

#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
}

impl Requirement {
    fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.key);
        match &self.op {
            Op::In(vs) => v.is_some_and(|v| vs.iter().any(|x| x == v)),
            Op::NotIn(vs) => v.is_none_or(|v| !vs.iter().any(|x| x == v)),
            Op::Exists => v.is_some(),
            Op::DoesNotExist => v.is_none(),
            Op::Gt(n) => v
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            Op::Lt(n) => v
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        }
    }
}

/// A compiled label selector. `nothing` selects no object (a nil or invalid selector).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Selector {
    reqs: Vec<Requirement>,
    nothing: bool,
}

impl Selector {
    /// The selector that matches nothing (upstream `labels.Nothing()`).
    pub fn nothing() -> Selector {
        Selector {
            reqs: Vec::new(),
            nothing: true,
        }
    }

    /// `metav1.LabelSelectorAsSelector`: `None` selects nothing, an empty selector everything.
    pub fn from_label_selector(sel: Option<&LabelSelector>) -> Selector {
        let Some(sel) = sel else {
            return Selector::nothing();
        };
        let mut reqs = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            reqs.push(Requirement {
                key: k.clone(),
                op: Op::In(vec![v.clone()]),
            });
        }
        for e in sel.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            let op = match e.operator.as_str() {
                "In" => Op::In(values),
                "NotIn" => Op::NotIn(values),
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                _ => return Selector::nothing(),
            };
            reqs.push(Requirement {
                key: e.key.clone(),
                op,
            });
        }
        Selector {
            reqs,
            nothing: false,
        }
    }

    /// A selector from plain `key=value` pairs (a Service's or ReplicaSet's selector map).
    pub fn from_map(m: &BTreeMap<String, String>) -> Selector {
        Selector {
            reqs: m
                .iter()
                .map(|(k, v)| Requirement {
                    key: k.clone(),
                    op: Op::In(vec![v.clone()]),
                })
                .collect(),
            nothing: false,
        }
    }

    /// Adds `key in (value)` (matchLabelKeys) or `key notin` … requirements.
    pub fn add_equals(&mut self, key: &str, value: &str) {
        self.reqs.push(Requirement {
            key: key.into(),
            op: Op::In(vec![value.into()]),
        });
    }

    pub fn is_empty(&self) -> bool {
        !self.nothing && self.reqs.is_empty()
    }

    pub fn matches(&self, labels: Option<&Labels>) -> bool {
        if self.nothing {
            return false;
        }
        if self.reqs.is_empty() {
            return true;
        }
        static EMPTY: Labels = BTreeMap::new();
        let labels = labels.unwrap_or(&EMPTY);
        self.reqs.iter().all(|r| r.matches(labels))
    }
}

/// One compiled `NodeSelectorTerm`: label requirements and `metadata.name` field requirements.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeTerm {
    labels: Vec<Requirement>,
    fields: Vec<Requirement>,
    /// An invalid or empty term matches nothing.
    valid: bool,
}

fn node_req(r: &NodeSelectorRequirement) -> Option<Requirement> {
    let values = r.values.clone().unwrap_or_default();
    let op = match r.operator.as_str() {
        "In" => Op::In(values),
        "NotIn" => Op::NotIn(values),
        "Exists" => Op::Exists,
        "DoesNotExist" => Op::DoesNotExist,
        "Gt" | "Lt" => {
            let n: i64 = values.first()?.parse().ok()?;
            if values.len() != 1 {
                return None;
            }
            if r.operator == "Gt" {
                Op::Gt(n)
            } else {
                Op::Lt(n)
            }
        }
        _ => return None,
    };
    Some(Requirement {
        key: r.key.clone(),
        op,
    })
}

impl NodeTerm {
    pub fn new(t: &NodeSelectorTerm) -> NodeTerm {
        let mut term = NodeTerm {
            labels: Vec::new(),
            fields: Vec::new(),
            valid: true,
        };
        for r in t.match_expressions.iter().flatten() {
            match node_req(r) {
                Some(r) => term.labels.push(r),
                None => term.valid = false,
            }
        }
        for r in t.match_fields.iter().flatten() {
            match node_req(r) {
                Some(r) if r.key == "metadata.name" => term.fields.push(r),
                _ => term.valid = false,
            }
        }
        if term.labels.is_empty() && term.fields.is_empty() {
            term.valid = false;
        }
        term
    }

    pub fn matches(&self, node_name: &str, labels: &Labels) -> bool {
        if !self.valid {
            return false;
        }
        if !self.labels.iter().all(|r| r.matches(labels)) {
            return false;
        }
        if self.fields.is_empty() {
            return true;
        }
        let mut f = Labels::new();
        f.insert("metadata.name".into(), node_name.into());
        self.fields.iter().all(|r| r.matches(&f))
    }

    /// The node names a term restricts to through `matchFields metadata.name In (…)`.
    pub fn name_restriction(&self) -> Option<Vec<String>> {
        self.fields.iter().find_map(|r| match &r.op {
            Op::In(v) => Some(v.clone()),
            _ => None,
        })
    }
}

/// ORed node selector terms (`requiredDuringSchedulingIgnoredDuringExecution`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeSelector {
    pub terms: Vec<NodeTerm>,
}

impl NodeSelector {
    pub fn new(terms: &[NodeSelectorTerm]) -> NodeSelector {
        NodeSelector {
            terms: terms.iter().map(NodeTerm::new).collect(),
        }
    }
    pub fn matches(&self, node_name: &str, labels: &Labels) -> bool {
        self.terms.iter().any(|t| t.matches(node_name, labels))
    }
}

/// `Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref() {
        if !e.is_empty() && e != taint.effect {
            return false;
        }
    }
    let key = t.key.as_deref().unwrap_or("");
    let op = t.operator.as_deref().unwrap_or("Equal");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    if key.is_empty() && op != "Exists" {
        return false;
    }
    match op {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// The first taint with one of `effects` that no toleration tolerates.
pub fn find_untolerated<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    effects: &[&str],
) -> Option<&'a Taint> {
    taints.iter().find(|taint| {
        effects.contains(&taint.effect.as_str()) && !tolerations.iter().any(|t| tolerates(t, taint))
    })
}

//! Completion indexes of Indexed Jobs (upstream `pkg/controller/job/indexed_job_utils.go`): the
//! index a pod carries in the `batch.kubernetes.io/job-completion-index` annotation, and the
//! ordered intervals `status.completedIndexes` and `status.failedIndexes` are written as
//! (`"1,3-5,7"`; two neighbours are written `"1,2"`, as upstream does).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;

/// The annotation (and, since 1.28, label) carrying a pod's completion index.
pub const COMPLETION_INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";
/// The environment variable the index is exposed as, through the downward API.
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// The pod's completion index, if it carries a valid one (`getCompletionIndex`).
pub fn completion_index(pod: &Pod) -> Option<i32> {
    let v = pod
        .metadata
        .annotations
        .as_ref()?
        .get(COMPLETION_INDEX_ANNOTATION)?;
    v.parse::<i32>().ok().filter(|i| *i >= 0)
}

/// Parses `"1,3-5,7"` into a set, ignoring indexes at or above `completions` (upstream's
/// `parseIndexesFromString`; malformed parts are skipped).
pub fn parse(s: Option<&str>, completions: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.unwrap_or("").split(',').filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<i32>(), b.parse::<i32>()),
            None => (part.parse::<i32>(), part.parse::<i32>()),
        };
        let (Ok(first), Ok(last)) = (first, last) else {
            continue;
        };
        for i in first.max(0)..=last.min(completions - 1) {
            out.insert(i);
        }
    }
    out
}

/// Formats a set of indexes as ordered intervals (upstream's `orderedIntervals.String`).
pub fn format(set: &BTreeSet<i32>) -> String {
    let mut out = String::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(first) = iter.next() {
        let mut last = first;
        while iter.peek() == Some(&(last + 1)) {
            last = iter.next().unwrap_or(last);
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&first.to_string());
        if last > first {
            out.push(if last == first + 1 { ',' } else { '-' });
            out.push_str(&last.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_round_trip_and_neighbours_are_listed() {
        let set: BTreeSet<i32> = [0, 1, 3, 4, 5, 7, 9, 10].into();
        assert_eq!(format(&set), "0,1,3-5,7,9,10");
        assert_eq!(parse(Some("0,1,3-5,7,9,10"), 100), set);
        assert_eq!(format(&BTreeSet::new()), "");
        // Out of range and malformed parts are dropped.
        assert_eq!(parse(Some("2-6,x,8"), 5), [2, 3, 4].into());
        assert!(parse(None, 3).is_empty());
    }
}

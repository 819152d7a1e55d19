//! CRI list filters: an id (full or a unique prefix, as containerd accepts truncated ids), a
//! state, a sandbox id and an exact-match label selector — all of them must hold.

use std::collections::HashMap;

/// True when every `selector` pair is present in `labels` with the same value.
pub fn labels_match(selector: &HashMap<String, String>, labels: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// True when `filter` is empty or `id` starts with it.
pub fn id_matches(filter: &str, id: &str) -> bool {
    filter.is_empty() || id.starts_with(filter)
}

/// Finds the one id in `ids` that `wanted` names, exactly or as a unique prefix.
pub fn resolve_id<'a>(wanted: &str, ids: impl Iterator<Item = &'a String>) -> Option<String> {
    if wanted.is_empty() {
        return None;
    }
    let mut found = None;
    for id in ids {
        if id == wanted {
            return Some(id.clone());
        }
        if id.starts_with(wanted) {
            if found.is_some() {
                return None;
            }
            found = Some(id.clone());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_and_prefixes() {
        let labels: HashMap<String, String> = [("app".to_string(), "web".to_string())]
            .into_iter()
            .collect();
        assert!(labels_match(&HashMap::new(), &labels));
        assert!(labels_match(&labels, &labels));
        let other = [("app".to_string(), "db".to_string())]
            .into_iter()
            .collect();
        assert!(!labels_match(&other, &labels));
        let ids = ["abc1".to_string(), "abd2".to_string()];
        assert_eq!(resolve_id("abc", ids.iter()).as_deref(), Some("abc1"));
        assert_eq!(resolve_id("ab", ids.iter()), None);
        assert_eq!(resolve_id("", ids.iter()), None);
        assert!(id_matches("", "x") && id_matches("ab", "abc") && !id_matches("b", "abc"));
    }
}

//! events.k8s.io/v1 Event as a second view of the core/v1 Events store, as upstream serves one
//! stored object through both APIs: an event written through one is read through the other.
//! Field mapping as upstream's conversion (pkg/apis/events/v1 conversion): regarding ↔
//! involvedObject, note ↔ message, deprecatedSource ↔ source, deprecatedFirstTimestamp ↔
//! firstTimestamp, deprecatedLastTimestamp ↔ lastTimestamp, deprecatedCount ↔ count,
//! reportingController ↔ reportingComponent; the rest have the same names.

use serde_json::{Map, Value};

/// (events.k8s.io/v1 field, core/v1 field)
const RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("reportingController", "reportingComponent"),
];

fn rename(obj: &Value, api_version: &str, to_core: bool) -> Value {
    let Some(m) = obj.as_object() else {
        return obj.clone();
    };
    let mut out = Map::new();
    for (k, v) in m {
        let renamed = RENAMES
            .iter()
            .find(|(e, c)| if to_core { e == k } else { c == k })
            .map(|(e, c)| if to_core { *c } else { *e });
        out.insert(renamed.unwrap_or(k).to_string(), v.clone());
    }
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    Value::Object(out)
}

/// events.k8s.io/v1 → the stored core/v1 form.
pub fn to_core(obj: &Value) -> Value {
    let mut v = rename(obj, "v1", true);
    // core/v1 requires involvedObject; events.k8s.io's regarding is optional.
    if v.get("involvedObject").is_none() {
        v["involvedObject"] = Value::Object(Map::new());
    }
    v
}

/// The stored core/v1 form → events.k8s.io/v1.
pub fn from_core(obj: &Value) -> Value {
    rename(obj, "events.k8s.io/v1", false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_between_views() {
        let ev = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Pod", "name": "p"}, "note": "hi", "reason": "Started",
            "reportingController": "kubelet", "eventTime": "2024-01-01T00:00:00.000000Z"});
        let core = to_core(&ev);
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["message"], "hi");
        assert_eq!(core["reportingComponent"], "kubelet");
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(from_core(&core), ev);
    }
}

//! Small helpers over `serde_json::Value` objects in the wire form of the Kubernetes types, and a
//! `resource.Quantity` parser (k8s.io/apimachinery/pkg/api/resource) good enough to compare
//! quantities the way upstream validation and QoS classification do.

use serde_json::{Map, Value};

/// `v[key]` as an object, created (replacing null or a non-object) when missing.
pub fn obj<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    let map = v.as_object_mut().expect("object");
    let slot = map
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut().expect("object")
}

/// Sets `m[key] = value` when the key is missing or null (a Go nil pointer / empty string).
pub fn default(m: &mut Map<String, Value>, key: &str, value: Value) {
    match m.get(key) {
        None | Some(Value::Null) => {
            m.insert(key.to_string(), value);
        }
        Some(Value::String(s)) if s.is_empty() && value.is_string() => {
            m.insert(key.to_string(), value);
        }
        _ => {}
    }
}

/// True when `m[key]` is absent, null, an empty string, array or object (Go's zero/empty).
pub fn is_empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        _ => false,
    }
}

/// The string at a JSON pointer, or "".
pub fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// Mutable access to each element of the array at `m[key]` that is an object.
pub fn each_obj_mut<'a>(
    m: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    m.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flat_map(|a| a.iter_mut())
        .filter_map(Value::as_object_mut)
}

/// The array at `v[key]`, or an empty slice.
pub fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The object entries at `v[key]`, or none.
pub fn entries<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = (&'a String, &'a Value)> {
    v.get(key)
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| m.iter())
}

/// A quantity scaled to nano-units (`1` = 1_000_000_000), saturating: exact enough to compare
/// requests with limits and to add them up.
pub fn parse_quantity(s: &str) -> Option<i128> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let (sign, rest) = match s.as_bytes()[0] {
        b'-' => (-1i128, &s[1..]),
        b'+' => (1, &s[1..]),
        _ => (1, s),
    };
    let num_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (num, suffix) = rest.split_at(num_end);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return None;
    }
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    // mantissa as integer digits with a decimal exponent
    let digits = format!("{int_part}{frac_part}");
    let mut mantissa: i128 = 0;
    for d in digits.bytes() {
        mantissa = mantissa
            .saturating_mul(10)
            .saturating_add((d - b'0') as i128);
    }
    let mut exp10: i32 = -(frac_part.len() as i32);
    let mut mult: i128 = 1;
    match suffix {
        "" => {}
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => mult = 1 << 10,
        "Mi" => mult = 1 << 20,
        "Gi" => mult = 1 << 30,
        "Ti" => mult = 1 << 40,
        "Pi" => mult = 1 << 50,
        "Ei" => mult = 1 << 60,
        e if e.starts_with(['e', 'E']) => {
            let n: i32 = e[1..].parse().ok()?;
            exp10 += n;
        }
        _ => return None,
    }
    exp10 += 9; // nano units
    let mut v = mantissa.saturating_mul(mult);
    if exp10 >= 0 {
        for _ in 0..exp10.min(60) {
            v = v.saturating_mul(10);
        }
    } else {
        for _ in 0..(-exp10).min(60) {
            // round up like upstream's ScaledValue when precision is lost
            let r = v % 10;
            v /= 10;
            if r != 0 {
                v += 1;
            }
        }
    }
    Some(sign * v)
}

/// Quantity value of a JSON quantity (string or number).
pub fn quantity(v: &Value) -> Option<i128> {
    match v {
        Value::String(s) => parse_quantity(s),
        Value::Number(n) => parse_quantity(&n.to_string()),
        _ => None,
    }
}

/// The quantity as the user wrote it, for messages.
pub fn quantity_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        let cases: &[(&str, Option<i128>)] = &[
            ("1", Some(1_000_000_000)),
            ("100m", Some(100_000_000)),
            ("0.5", Some(500_000_000)),
            ("1Ki", Some(1024 * 1_000_000_000)),
            ("1k", Some(1000 * 1_000_000_000)),
            ("1e3", Some(1000 * 1_000_000_000)),
            ("128Mi", Some(128 * (1 << 20) * 1_000_000_000)),
            ("-1", Some(-1_000_000_000)),
            ("1n", Some(1)),
            ("", None),
            ("abc", None),
            ("1Xi", None),
            ("1.2.3", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_quantity(s), *want, "{s}");
        }
        assert_eq!(parse_quantity("1Gi"), parse_quantity("1024Mi"));
        assert!(parse_quantity("500m") < parse_quantity("1"));
    }

    #[test]
    fn defaulting_helpers() {
        let mut v = serde_json::json!({"spec": {"a": "", "b": "x", "c": null}});
        let spec = obj(&mut v, "spec");
        default(spec, "a", "A".into());
        default(spec, "b", "B".into());
        default(spec, "c", 1.into());
        default(spec, "d", 2.into());
        assert_eq!(
            v,
            serde_json::json!({"spec": {"a": "A", "b": "x", "c": 1, "d": 2}})
        );
    }
}

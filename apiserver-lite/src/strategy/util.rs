//! Small helpers over `serde_json::Value` objects in the wire form of the Kubernetes types, and a
//! `resource.Quantity` parser (k8s.io/apimachinery/pkg/api/resource) good enough to compare
//! quantities the way upstream validation and QoS classification do.

use serde_json::{Map, Value};

pub use machinery::quantity::parse_quantity;

/// `v[key]` as an object, created (replacing null or a non-object) when missing.
pub fn obj<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    obj_in(v.as_object_mut().expect("object"), key)
}

/// `m[key]` as an object, created (replacing null or a non-object) when missing.
pub fn obj_in<'a>(m: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    if !m.g(key).is_some_and(Value::is_object) {
        m.insert(key.to_string(), Value::Object(Map::new()));
    }
    m.gm(key).and_then(Value::as_object_mut).expect("object")
}

/// A default value, built only when it is used.
pub trait DefaultValue {
    fn is_string(&self) -> bool;
    fn into_value(self) -> Value;
}

impl DefaultValue for Value {
    fn is_string(&self) -> bool {
        Value::is_string(self)
    }
    fn into_value(self) -> Value {
        self
    }
}

impl DefaultValue for &str {
    fn is_string(&self) -> bool {
        true
    }
    fn into_value(self) -> Value {
        Value::String(self.to_string())
    }
}

impl DefaultValue for i64 {
    fn is_string(&self) -> bool {
        false
    }
    fn into_value(self) -> Value {
        Value::from(self)
    }
}

impl DefaultValue for bool {
    fn is_string(&self) -> bool {
        false
    }
    fn into_value(self) -> Value {
        Value::Bool(self)
    }
}

/// An empty object, `{}`.
pub struct EmptyObject;

impl DefaultValue for EmptyObject {
    fn is_string(&self) -> bool {
        false
    }
    fn into_value(self) -> Value {
        Value::Object(Map::new())
    }
}

/// Sets `m[key] = value` when the key is missing or null (a Go nil pointer / empty string).
#[cfg(test)]
pub fn default(m: &mut Map<String, Value>, key: &str, value: Value) {
    default_to(m, key, value)
}

/// [`default`] with a value built only when it is used.
pub fn default_to(m: &mut Map<String, Value>, key: &str, value: impl DefaultValue) {
    match m.gm(key) {
        None => {
            m.insert(key.to_string(), value.into_value());
        }
        Some(slot @ Value::Null) => *slot = value.into_value(),
        Some(slot @ Value::String(_)) if value.is_string() && slot.as_str() == Some("") => {
            *slot = value.into_value()
        }
        _ => {}
    }
}

/// Maps up to this size are searched linearly: cheaper than hashing the key.
const LINEAR_LOOKUP_MAX: usize = 12;

/// `m.g(key)`, by a linear search on small maps (no key hashing).
#[inline]
pub fn map_get<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if m.len() <= LINEAR_LOOKUP_MAX {
        m.iter().find(|(k, _)| k.as_str() == key).map(|(_, v)| v)
    } else {
        m.get(key)
    }
}

/// `get` by field name through [`map_get`], for objects and maps.
pub trait Get {
    fn g(&self, key: &str) -> Option<&Value>;
}

impl Get for Value {
    #[inline]
    fn g(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(m) => map_get(m, key),
            _ => None,
        }
    }
}

impl Get for Map<String, Value> {
    #[inline]
    fn g(&self, key: &str) -> Option<&Value> {
        map_get(self, key)
    }
}

/// `m.gm(key)`, by a linear search on small maps (no key hashing).
#[inline]
pub fn map_get_mut<'a>(m: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Value> {
    if m.len() <= LINEAR_LOOKUP_MAX {
        m.iter_mut()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, v)| v)
    } else {
        m.get_mut(key)
    }
}

/// `get_mut` by field name through [`map_get_mut`], for objects and maps.
pub trait GetMut {
    fn gm(&mut self, key: &str) -> Option<&mut Value>;
}

impl GetMut for Value {
    #[inline]
    fn gm(&mut self, key: &str) -> Option<&mut Value> {
        match self {
            Value::Object(m) => map_get_mut(m, key),
            _ => None,
        }
    }
}

impl GetMut for Map<String, Value> {
    #[inline]
    fn gm(&mut self, key: &str) -> Option<&mut Value> {
        map_get_mut(self, key)
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
    at(v, ptr).and_then(Value::as_str).unwrap_or("")
}

/// `Value::pointer` without its per-token allocations (tokens are only unescaped, into a new
/// string, when they hold a `~`).
pub fn at<'a>(v: &'a Value, ptr: &str) -> Option<&'a Value> {
    if ptr.is_empty() {
        return Some(v);
    }
    let mut rest = ptr.strip_prefix('/')?;
    let mut cur = v;
    loop {
        // split at the next '/', by bytes (an ASCII byte is always a char boundary)
        let (token, next) = match rest.bytes().position(|b| b == b'/') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let unescaped;
        let token = if token.bytes().any(|b| b == b'~') {
            unescaped = token.replace("~1", "/").replace("~0", "~");
            unescaped.as_str()
        } else {
            token
        };
        cur = match cur {
            Value::Object(m) => m.g(token)?,
            Value::Array(a) => a.get(parse_index(token)?)?,
            _ => return None,
        };
        match next {
            Some(n) => rest = n,
            None => return Some(cur),
        }
    }
}

/// `Value::pointer` as a method, through [`at`].
pub trait Ptr {
    fn ptr(&self, ptr: &str) -> Option<&Value>;
}

impl Ptr for Value {
    fn ptr(&self, ptr: &str) -> Option<&Value> {
        at(self, ptr)
    }
}

/// An array index as `Value::pointer` accepts it: no sign and no leading zero.
fn parse_index(s: &str) -> Option<usize> {
    if s.starts_with('+') || (s.starts_with('0') && s.len() != 1) {
        return None;
    }
    s.parse().ok()
}

/// Mutable access to each element of the array at `m[key]` that is an object.
pub fn each_obj_mut<'a>(
    m: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    m.gm(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flat_map(|a| a.iter_mut())
        .filter_map(Value::as_object_mut)
}

/// The array at `v[key]`, or an empty slice.
pub fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.g(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The object entries at `v[key]`, or none.
pub fn entries<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = (&'a String, &'a Value)> {
    v.g(key)
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| m.iter())
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

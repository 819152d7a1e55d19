//! Resource quantities (`100m`, `1.5`, `128Mi`, `1G`, `1e3`) read as numbers, rounding up as
//! upstream's `Quantity.Value()` and `MilliValue()` do.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The quantity as a float of base units; `None` when malformed.
pub fn parse(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * mult)
}

/// Thousandths of the unit, rounded up (`MilliValue`); malformed reads as 0.
pub fn milli_value(q: &Quantity) -> i64 {
    parse(&q.0)
        .map(|v| (v * 1000.0 - 1e-9).ceil() as i64)
        .unwrap_or(0)
}

/// Whole units, rounded up (`Value`); malformed reads as 0.
pub fn value(q: &Quantity) -> i64 {
    parse(&q.0).map(|v| (v - 1e-9).ceil() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        let q = |s: &str| Quantity(s.to_string());
        assert_eq!(milli_value(&q("100m")), 100);
        assert_eq!(milli_value(&q("1")), 1000);
        assert_eq!(milli_value(&q("0.5")), 500);
        assert_eq!(milli_value(&q("1.5")), 1500);
        assert_eq!(value(&q("128Mi")), 128 << 20);
        assert_eq!(value(&q("1G")), 1_000_000_000);
        assert_eq!(value(&q("1e3")), 1000);
        assert_eq!(value(&q("64k")), 64_000);
        assert_eq!(value(&q("1Gi")), 1 << 30);
        assert_eq!(value(&q("bogus")), 0);
    }
}

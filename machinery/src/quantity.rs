//! Resource quantities (`100m`, `1.5Gi`, `2e3`, `1k`), as upstream's `resource.Quantity` reads
//! them.
//!
//! A quantity is parsed ([`parse_quantity`]) to exact nano-units in an `i128`, so that sums and
//! comparisons (QoS classes, pod requests, the downward API's divisors) are exact, and upstream's
//! `Value()` and `MilliValue()` ([`value`], [`milli_value`]) round up as they do. The planner,
//! QoS, the environment and the volumes all read quantities through this one module.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

const NANO: i128 = 1_000_000_000;

/// Parses a Kubernetes quantity (`100m`, `1.5Gi`, `2e3`, `1k`) to nano-units (1 = 10^9),
/// rounding the sub-nano part up. `None` for malformed input.
pub fn parse_quantity(s: &str) -> Option<i128> {
    let s = s.trim();
    let (neg, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let end = rest
        .bytes()
        .position(|c| !(c.is_ascii_digit() || c == b'.'))
        .unwrap_or(rest.len());
    let (num, suffix) = rest.split_at(end);
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return None;
    }
    let mut exp10: i32 = -(frac.len() as i32);
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
        e if e.starts_with(['e', 'E']) => exp10 += e[1..].parse::<i32>().ok()?,
        _ => return None,
    }
    let mut mantissa: i128 = 0;
    for d in int.bytes().chain(frac.bytes()) {
        mantissa = mantissa.checked_mul(10)?.checked_add((d - b'0') as i128)?;
    }
    let mut v = mantissa.checked_mul(mult)?;
    let exp = exp10 + 9;
    if exp >= 0 {
        v = v.checked_mul(10i128.checked_pow(exp as u32)?)?;
    } else {
        let d = 10i128.checked_pow((-exp) as u32).unwrap_or(i128::MAX);
        v = (v + d - 1) / d;
    }
    Some(if neg { -v } else { v })
}

fn ceil_div(v: i128, d: i128) -> i128 {
    if v >= 0 {
        (v + d - 1) / d
    } else {
        v / d
    }
}

/// Nano-units → upstream `Value()` (rounded up).
pub fn nanos_to_value(n: i128) -> i64 {
    ceil_div(n, NANO).clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// Nano-units → upstream `MilliValue()` (rounded up).
pub fn nanos_to_milli(n: i128) -> i64 {
    ceil_div(n, 1_000_000).clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// A quantity's nano-units; malformed quantities (rejected by API validation) count as zero.
pub fn quantity_nanos(q: &Quantity) -> i128 {
    parse_quantity(&q.0).unwrap_or(0)
}

/// Upstream `Quantity.Value()`: whole units, rounded up; malformed reads as 0.
pub fn value(q: &Quantity) -> i64 {
    nanos_to_value(quantity_nanos(q))
}

/// Upstream `Quantity.MilliValue()`: thousandths of the unit, rounded up; malformed reads as 0.
pub fn milli_value(q: &Quantity) -> i64 {
    nanos_to_milli(quantity_nanos(q))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        let n = |s| parse_quantity(s).unwrap();
        assert_eq!(n("1"), NANO);
        assert_eq!(n("100m"), NANO / 10);
        assert_eq!(n("1.5"), 3 * NANO / 2);
        assert_eq!(n("1Ki"), 1024 * NANO);
        assert_eq!(n("2e3"), 2000 * NANO);
        assert_eq!(n("1E"), NANO * 10i128.pow(18));
        assert_eq!(n("1k"), 1000 * NANO);
        assert_eq!(n(".5"), NANO / 2);
        assert_eq!(n("-1m"), -NANO / 1000);
        for bad in ["", "m", "1x", "1..2", "Ki"] {
            assert!(parse_quantity(bad).is_none(), "{bad}");
        }
        // Value and MilliValue round up.
        assert_eq!(nanos_to_milli(n("1n")), 1);
        assert_eq!(nanos_to_value(n("1500m")), 2);
        assert_eq!(nanos_to_value(n("128Mi")), 128 << 20);
    }

    #[test]
    fn values_of_api_quantities() {
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

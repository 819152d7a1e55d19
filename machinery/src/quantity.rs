//! Resource quantities (`100m`, `1.5Gi`, `2e3`, `1k`), as upstream's `resource.Quantity` reads
//! them.
//!
//! A quantity is parsed ([`parse_quantity`]) to exact nano-units in an `i128`, so that sums and
//! comparisons (QoS classes, pod requests, the downward API's divisors) are exact, and upstream's
//! `Value()` and `MilliValue()` ([`value`], [`milli_value`]) round up as they do. The planner,
//! QoS, the environment and the volumes all read quantities through this one module.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// One unit in nano-units.
pub const NANO: i128 = 1_000_000_000;

/// Parses a Kubernetes quantity (`100m`, `1.5Gi`, `2e3`, `1k`) to nano-units (1 = 10^9),
/// rounding the sub-nano part up as upstream's `ScaledValue` does and saturating where upstream's
/// arbitrary precision goes beyond an `i128` (exact enough to compare requests with limits and to
/// add them up). `None` for malformed input.
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
    // (a non-ASCII char starts with a non-digit byte, so bytes find the same index)
    let num_end = rest
        .bytes()
        .position(|c| !(c.is_ascii_digit() || c == b'.'))
        .unwrap_or(rest.len());
    let (num, suffix) = rest.split_at(num_end);
    if num.is_empty() || num == "." || num.bytes().filter(|b| *b == b'.').count() > 1 {
        return None;
    }
    let (int_part, frac_part) = match num.bytes().position(|b| b == b'.') {
        Some(i) => (&num[..i], &num[i + 1..]),
        None => (num, ""),
    };
    // mantissa as integer digits with a decimal exponent
    let mut mantissa: i128 = 0;
    for d in int_part.bytes().chain(frac_part.bytes()) {
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
                // v >= 0: the mantissa has no sign and mult is positive
    let mut v = mantissa.saturating_mul(mult);
    // one multiplication or (ceiling) division by 10^k gives what k steps by 10 would: both
    // saturate the same way, and nested ceilings of divisions are the ceiling of the whole one
    if exp10 >= 0 {
        let k = exp10.min(60) as u32;
        v = match 10i128.checked_pow(k) {
            Some(p) => v.saturating_mul(p),
            None if v == 0 => 0,
            None => i128::MAX,
        };
    } else {
        // round up like upstream's ScaledValue when precision is lost
        let k = (-exp10).min(60) as u32;
        v = match 10i128.checked_pow(k) {
            Some(p) => v / p + i128::from(v % p != 0),
            None => i128::from(v != 0),
        };
    }
    Some(sign * v)
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

/// A quantity of `resource` in nano-units as upstream prints it in quota messages and status: a
/// whole number (with a binary suffix for whole Ki/Mi/Gi/Ti of byte resources — `memory`,
/// `storage`), else milli-units.
pub fn format_quantity(resource: &str, nano: i128) -> String {
    if nano % NANO != 0 {
        return format!("{}m", (nano + 999_999) / 1_000_000);
    }
    let v = nano / NANO;
    let bytes = resource.contains("memory") || resource.contains("storage");
    if bytes && v != 0 {
        for (suffix, unit) in [
            ("Ti", 1i128 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ] {
            if v % unit == 0 {
                return format!("{}{suffix}", v / unit);
            }
        }
    }
    v.to_string()
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

    #[test]
    fn saturating_quantities() {
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
}

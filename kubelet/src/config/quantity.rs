//! Kubernetes resource quantities (`100Mi`, `500m`, `1.5Gi`, `2e3`, `1k`), as
//! `resource.Quantity` parses them: a decimal number and one suffix, binary (`Ki`…`Ei`), decimal
//! SI (`n`, `u`, `m`, `k`, `M`…`E`) or a decimal exponent. KubeletConfiguration's reservations and
//! eviction thresholds are written this way, and the Node's capacity is published this way.
//!
//! Values are kept as integer milli-units (`i128`) so CPU (`250m`) and bytes (`1Gi`) share one
//! exact representation; fractions below a milli-unit round up, as upstream's `MilliValue` does.

/// Parses a quantity into milli-units; `None` when the text is not a quantity.
pub fn parse_milli(s: &str) -> Option<i128> {
    let s = s.trim();
    let (sign, body) = match s.as_bytes().first()? {
        b'-' => (-1, &s[1..]),
        b'+' => (1, &s[1..]),
        _ => (1, s),
    };
    let num_end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (num, suffix) = body.split_at(num_end);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return None;
    }
    // (multiplier numerator, power of ten) applied to the number, in milli-units.
    let (mul, exp10): (i128, i32) = match suffix {
        "" => (1, 3),
        "n" => (1, -6),
        "u" => (1, -3),
        "m" => (1, 0),
        "k" => (1, 6),
        "M" => (1, 9),
        "G" => (1, 12),
        "T" => (1, 15),
        "P" => (1, 18),
        "E" => (1, 21),
        "Ki" => (1 << 10, 3),
        "Mi" => (1 << 20, 3),
        "Gi" => (1 << 30, 3),
        "Ti" => (1 << 40, 3),
        "Pi" => (1 << 50, 3),
        "Ei" => (1 << 60, 3),
        e if e.starts_with(['e', 'E']) => (1, e[1..].parse::<i32>().ok()?.checked_add(3)?),
        _ => return None,
    };
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    let digits = format!("{int_part}{frac_part}");
    let mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    let exp = exp10 - frac_part.len() as i32;
    let scaled = mantissa.checked_mul(mul)?;
    let value = if exp >= 0 {
        scaled.checked_mul(10i128.checked_pow(exp as u32)?)?
    } else {
        let div = 10i128.checked_pow((-exp) as u32)?;
        // Round up, as Quantity.MilliValue does for positive values.
        (scaled + div - 1) / div
    };
    Some(sign * value)
}

/// Parses a quantity into whole units (bytes, cores rounded up).
pub fn parse_units(s: &str) -> Option<i128> {
    parse_milli(s).map(|m| (m + 999).div_euclid(1000))
}

/// Formats a byte count the way the kubelet publishes memory and storage: `Ki` when it divides
/// evenly (cadvisor's values always do for memory), else plain bytes.
pub fn format_bytes(bytes: i128) -> String {
    if bytes != 0 && bytes % 1024 == 0 {
        format!("{}Ki", bytes / 1024)
    } else {
        bytes.to_string()
    }
}

/// Formats milli-CPU: whole cores as an integer, else `NNNm`.
pub fn format_milli_cpu(milli: i128) -> String {
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quantities() {
        let cases = [
            ("100Mi", Some(100 * 1024 * 1024 * 1000)),
            ("1Gi", Some((1i128 << 30) * 1000)),
            ("500m", Some(500)),
            ("1", Some(1000)),
            ("1.5", Some(1500)),
            ("0.5Gi", Some((1i128 << 29) * 1000)),
            ("2k", Some(2_000_000)),
            ("1e3", Some(1_000_000)),
            ("1n", Some(1)),
            ("-1", Some(-1000)),
            ("", None),
            ("Mi", None),
            ("1.2.3", None),
            ("10%", None),
            ("1Xi", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_milli(input), want, "parse_milli({input:?})");
        }
        assert_eq!(parse_units("250m"), Some(1));
        assert_eq!(parse_units("100Mi"), Some(100 << 20));
    }

    #[test]
    fn formats() {
        assert_eq!(format_bytes(2048), "2Ki");
        assert_eq!(format_bytes(1000), "1000");
        assert_eq!(format_milli_cpu(4000), "4");
        assert_eq!(format_milli_cpu(1500), "1500m");
    }
}

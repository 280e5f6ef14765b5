//! Figures as people read them, shared by `th report` and `th show`: counts with thousands
//! separators, ratios as percentages without float noise, values of any type in a few characters.

use serde_json::Value;
use truthound_profile::profile::ColumnProfile;

/// 1234567 → `1,234,567`.
pub fn count(n: u64) -> String {
    group(&n.to_string())
}

fn group(digits: &str) -> String {
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A float with at most seven significant digits and four decimals, no trailing zeros, not
/// grouped (it is a value, not a count): 1500.496 → `1500.496`, 866.16916 → `866.1692`,
/// 0.000012345 → `1.235e-5`.
pub fn float(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "NaN".into()
        } else if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    if x == 0.0 {
        return "0".into();
    }
    let a = x.abs();
    if !(1e-4..1e15).contains(&a) {
        let s = format!("{x:.3e}");
        // 1.200e-5 → 1.2e-5
        return match s.split_once('e') {
            Some((m, e)) if m.contains('.') => {
                format!("{}e{e}", m.trim_end_matches('0').trim_end_matches('.'))
            }
            _ => s,
        };
    }
    // Four decimals for small magnitudes, fewer as the integer part grows (7 significant).
    let int_digits = if a >= 1.0 {
        a.log10().floor() as i32 + 1
    } else {
        0
    };
    let decimals = if a < 1.0 {
        (4 - a.log10().floor() as i32 - 1).clamp(4, 8)
    } else {
        (7 - int_digits).clamp(0, 4)
    } as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A ratio (0..=1) as a percentage: 0.3 → `30%`, 0.028333 → `2.83%`, 0.00034 → `0.034%`.
pub fn percent(ratio: f64) -> String {
    if !ratio.is_finite() {
        return String::new();
    }
    let p = ratio * 100.0;
    if p == 0.0 {
        return "0%".into();
    }
    let decimals = if p >= 10.0 {
        1
    } else if p >= 1.0 {
        2
    } else {
        // two significant digits
        ((-p.log10().floor()) as usize + 1).min(6)
    };
    let s = format!("{p:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    // Never round a part up to the whole, or a part down to nothing.
    if s == "100" && ratio < 1.0 {
        return "99.9%".into();
    }
    format!("{s}%")
}

/// Whether the column's values are numbers (so a JSON `null` among its values is non-finite).
pub fn is_float(c: &ColumnProfile) -> bool {
    c.nan_count.is_some() || c.pos_inf_count.is_some() || c.neg_inf_count.is_some()
}

/// What a JSON `null` value of this column stands for: floats write infinities as `null`.
pub fn null_value(c: &ColumnProfile) -> &'static str {
    let pos = c.pos_inf_count.unwrap_or(0) > 0;
    let neg = c.neg_inf_count.unwrap_or(0) > 0;
    match (pos, neg) {
        (true, false) => "inf",
        (false, true) => "-inf",
        (true, true) => "±inf",
        _ => "null",
    }
}

/// A value of the profile (min, max, quantile, top value) as text; `None` for a JSON null.
pub fn value(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(match n.as_f64() {
            Some(f) if n.is_f64() => float(f),
            _ => n.to_string(),
        }),
        Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    }
}

/// A min or max: an infinite one is `null` in the JSON, with its count beside it.
pub fn bound(v: Option<&Value>, infinities: Option<u64>, infinity: &str) -> Option<String> {
    match v {
        None | Some(Value::Null) if infinities.unwrap_or(0) > 0 => Some(infinity.to_string()),
        None => None,
        Some(v) => value(v),
    }
}

/// Milliseconds as a duration: `79 ms`, `1.25 s`, `3 min 5 s`, `2 h 4 min`.
pub fn duration_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{} s", float((ms as f64 / 10.0).round() / 100.0))
    } else if ms < 3_600_000 {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    } else {
        format!("{} h {} min", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    }
}

/// Bytes in binary units: `521,941 B` → `510 KiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut x = n as f64;
    let mut unit = 0;
    while x >= 1024.0 && unit + 1 < UNITS.len() {
        x /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else if x >= 100.0 {
        format!("{x:.0} {}", UNITS[unit])
    } else {
        format!("{x:.1} {}", UNITS[unit])
    }
}

/// Terminal columns a string takes: wide (CJK, emoji) characters take two, combining marks none.
pub fn display_width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

fn char_width(c: char) -> usize {
    let u = c as u32;
    match u {
        0x0300..=0x036F | 0x200B..=0x200F | 0xFE00..=0xFE0F => 0,
        0x1100..=0x115F
        | 0x2E80..=0x303E
        | 0x3041..=0x33FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x1F300..=0x1F64F
        | 0x1F900..=0x1F9FF
        | 0x20000..=0x3FFFD => 2,
        _ => 1,
    }
}

/// `s` cut to at most `width` terminal columns, with `…` when cut.
pub fn truncate(s: &str, width: usize) -> String {
    if display_width(s) <= width {
        return s.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = char_width(c);
        if used + w + 1 > width {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_figures() {
        assert_eq!(count(0), "0");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(float(1500.496), "1500.496");
        assert_eq!(float(866.1691611087787), "866.1692");
        assert_eq!(float(-2.0), "-2");
        assert_eq!(float(0.5), "0.5");
        assert_eq!(float(0.012345678), "0.01235");
        assert_eq!(float(1.2e-5), "1.2e-5");
        assert_eq!(float(1704094426000000.0), "1.704e15");
        assert_eq!(percent(0.0), "0%");
        assert_eq!(percent(1.0), "100%");
        assert_eq!(percent(0.301), "30.1%");
        assert_eq!(percent(0.028333333), "2.83%");
        assert_eq!(percent(0.00034305), "0.034%");
        assert_eq!(percent(0.99999), "99.9%");
        assert_eq!(value(&serde_json::json!(-3)), Some("-3".into()));
        assert_eq!(value(&serde_json::json!(3000)), Some("3000".into()));
        assert_eq!(duration_ms(79), "79 ms");
        assert_eq!(duration_ms(1250), "1.25 s");
        assert_eq!(bytes(521_941), "510 KiB");
        assert_eq!(display_width("서울"), 4);
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("서울서울", 5), "서울…");
    }
}

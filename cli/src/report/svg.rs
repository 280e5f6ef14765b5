//! The report's charts, as inline SVG drawn here: nothing to load, nothing to run, and they print.
//!
//! Every chart scales with its box (`viewBox`, `width="100%"`); text sits in the viewBox's units,
//! so labels stay in proportion on a phone and on a desktop.

use super::html::esc;
use crate::numfmt;
use std::fmt::Write;
use truthound_profile::profile::HistogramBin;

/// A horizontal bar showing `ratio` (0..=1) of a whole, in the colour of `class`.
pub fn meter(ratio: f64, class: &str, label: &str) -> String {
    let ratio = if ratio.is_finite() {
        ratio.clamp(0.0, 1.0)
    } else {
        0.0
    };
    // A part that is not nothing stays visible.
    let width = if ratio > 0.0 {
        (ratio * 100.0).max(0.8)
    } else {
        0.0
    };
    format!(
        r#"<svg class="meter" viewBox="0 0 100 6" preserveAspectRatio="none" role="img" aria-label="{label}"><rect class="track" width="100" height="6"/><rect class="fill {class}" width="{width:.2}" height="6"/></svg>"#,
        label = esc(label),
    )
}

/// How to label a histogram's bin edges.
pub enum Axis<'a> {
    /// Plain numbers.
    Numbers,
    /// Temporal values: edges are in the column's unit; `tick` renders one for the axis (short),
    /// `full` for a bar's tooltip.
    Temporal {
        tick: &'a dyn Fn(f64) -> String,
        full: &'a dyn Fn(f64) -> String,
    },
}

const W: f64 = 320.0;
const H: f64 = 150.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 22.0;
const RIGHT: f64 = 6.0;
const CHAR_W: f64 = 5.6;

/// A histogram: one `<rect class="bar">` per bin (empty bins too, at height 0), counts on the
/// y axis (0, half, max), the range on the x axis (first edge, middle, last edge). Each bar has a
/// `<title>` with its range and count.
pub fn histogram(bins: &[HistogramBin], axis: &Axis, column: &str) -> String {
    let max = bins.iter().map(|b| b.count).max().unwrap_or(0);
    let discrete = bins.iter().all(|b| b.lower == b.upper);
    let edge = |x: f64| match axis {
        Axis::Numbers => numfmt::float(x),
        Axis::Temporal { tick, .. } => tick(x),
    };
    let full = |x: f64| match axis {
        Axis::Numbers => numfmt::float(x),
        Axis::Temporal { full, .. } => full(x),
    };
    let y_labels = [max, max / 2, 0].map(numfmt::count);
    let left = 6.0 + CHAR_W * y_labels[0].chars().count() as f64;
    let plot_w = W - left - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let n = bins.len().max(1) as f64;
    let slot = plot_w / n;
    let gap = if slot > 4.0 { 1.0 } else { 0.0 };
    let first = bins.first().map_or(0.0, |b| b.lower);
    let last = bins.last().map_or(0.0, |b| b.upper);
    let label = format!(
        "Histogram of {column}: {} bins from {} to {}",
        bins.len(),
        full(first),
        full(last)
    );
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="histogram" viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="{}" data-bins="{}">"#,
        esc(&label),
        bins.len()
    );
    // Grid lines and y labels: max, half, zero.
    for (i, text) in y_labels.iter().enumerate() {
        let y = TOP + plot_h * i as f64 / 2.0;
        let _ = write!(
            s,
            r#"<line class="grid" x1="{left:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            W - RIGHT,
            left - 4.0,
            y + 3.5,
            esc(text)
        );
    }
    for (i, b) in bins.iter().enumerate() {
        let h = if max == 0 {
            0.0
        } else {
            plot_h * b.count as f64 / max as f64
        };
        let x = left + slot * i as f64 + gap / 2.0;
        let range = if b.lower == b.upper {
            full(b.lower)
        } else if i + 1 == bins.len() {
            format!("[{}, {}]", full(b.lower), full(b.upper))
        } else {
            format!("[{}, {})", full(b.lower), full(b.upper))
        };
        let _ = write!(
            s,
            r#"<rect class="bar" x="{x:.2}" y="{:.2}" width="{:.2}" height="{h:.2}"><title>{}: {}</title></rect>"#,
            TOP + plot_h - h,
            (slot - gap).max(0.5),
            esc(&range),
            numfmt::count(b.count)
        );
    }
    // The x axis: a base line and three labels.
    let base = TOP + plot_h;
    let _ = write!(
        s,
        r#"<line class="axis" x1="{left:.1}" x2="{:.1}" y1="{base:.1}" y2="{base:.1}"/>"#,
        W - RIGHT
    );
    if let (Some(f), Some(l)) = (bins.first(), bins.last()) {
        let y = base + 14.0;
        let (x0, x1, v0, v1) = if discrete {
            (left + slot / 2.0, W - RIGHT - slot / 2.0, f.lower, l.upper)
        } else {
            (left, W - RIGHT, f.lower, l.upper)
        };
        let (a0, a1) = if discrete {
            ("middle", "middle")
        } else {
            ("start", "end")
        };
        let _ = write!(
            s,
            r#"<text class="tick" x="{x0:.1}" y="{y:.1}" text-anchor="{a0}">{}</text><text class="tick" x="{x1:.1}" y="{y:.1}" text-anchor="{a1}">{}</text>"#,
            esc(&edge(v0)),
            esc(&edge(v1))
        );
        // A middle label when there is room between the two ends.
        let mid = bins.len() / 2;
        if bins.len() >= 4 {
            let (xm, vm) = if discrete {
                (left + slot * (mid as f64 + 0.5), bins[mid].lower)
            } else if bins.len().is_multiple_of(2) {
                (left + slot * mid as f64, bins[mid].lower)
            } else {
                (
                    left + slot * (mid as f64 + 0.5),
                    (bins[mid].lower + bins[mid].upper) / 2.0,
                )
            };
            let text = edge(vm);
            let room = (xm - x0).min(x1 - xm);
            let need = CHAR_W
                * (text.chars().count() as f64 / 2.0
                    + edge(v0).chars().count().max(edge(v1).chars().count()) as f64 / 2.0
                    + 2.0);
            if room > need {
                let _ = write!(
                    s,
                    r#"<text class="tick" x="{xm:.1}" y="{y:.1}" text-anchor="middle">{}</text>"#,
                    esc(&text)
                );
            }
        }
    }
    s.push_str("</svg>");
    s
}

/// A box plot of numeric quantiles: whiskers p1–p99 (or p5–p95), box p25–p75, a line at the
/// median. `None` when the quantiles are missing or all equal.
pub fn box_plot(q: &dyn Fn(&str) -> Option<f64>, column: &str) -> Option<String> {
    let (lo_name, hi_name) = if q("p1").is_some() && q("p99").is_some() {
        ("p1", "p99")
    } else {
        ("p5", "p95")
    };
    let (lo, hi) = (q(lo_name)?, q(hi_name)?);
    let (q1, med, q3) = (q("p25")?, q("p50")?, q("p75")?);
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return None;
    }
    const BW: f64 = 320.0;
    const BH: f64 = 46.0;
    let (pad, y, h) = (10.0, 6.0, 18.0);
    let x = |v: f64| pad + (BW - 2.0 * pad) * ((v - lo) / (hi - lo)).clamp(0.0, 1.0);
    let mid = y + h / 2.0;
    let label = format!(
        "Box plot of {column}: {lo_name} {}, p25 {}, median {}, p75 {}, {hi_name} {}",
        numfmt::float(lo),
        numfmt::float(q1),
        numfmt::float(med),
        numfmt::float(q3),
        numfmt::float(hi)
    );
    let ty = y + h + 14.0;
    // The median's label, unless it would run into the labels at the ends.
    let (tlo, tmed, thi) = (
        format!("{lo_name} {}", numfmt::float(lo)),
        numfmt::float(med),
        format!("{hi_name} {}", numfmt::float(hi)),
    );
    let chars = |t: &str| t.chars().count() as f64 * CHAR_W;
    let xm = x(med);
    let median_label = if xm - chars(&tmed) / 2.0 > x(lo) + chars(&tlo) + 4.0
        && xm + chars(&tmed) / 2.0 < x(hi) - chars(&thi) - 4.0
    {
        format!(
            r#"<text class="tick" x="{xm:.1}" y="{ty}" text-anchor="middle">{}</text>"#,
            esc(&tmed)
        )
    } else {
        String::new()
    };
    Some(format!(
        concat!(
            r#"<svg class="boxplot" viewBox="0 0 {bw} {bh}" width="100%" role="img" aria-label="{label}">"#,
            r#"<line class="whisker" x1="{xl:.1}" x2="{xq1:.1}" y1="{mid}" y2="{mid}"/>"#,
            r#"<line class="whisker" x1="{xq3:.1}" x2="{xh:.1}" y1="{mid}" y2="{mid}"/>"#,
            r#"<line class="whisker" x1="{xl:.1}" x2="{xl:.1}" y1="{wy0}" y2="{wy1}"/>"#,
            r#"<line class="whisker" x1="{xh:.1}" x2="{xh:.1}" y1="{wy0}" y2="{wy1}"/>"#,
            r#"<rect class="box" x="{xq1:.1}" y="{y}" width="{bwid:.1}" height="{h}"/>"#,
            r#"<line class="median" x1="{xm:.1}" x2="{xm:.1}" y1="{y}" y2="{yb}"/>"#,
            r#"<text class="tick" x="{xl:.1}" y="{ty}" text-anchor="start">{tlo}</text>"#,
            "{median_label}",
            r#"<text class="tick" x="{xh:.1}" y="{ty}" text-anchor="end">{thi}</text>"#,
            "</svg>"
        ),
        bw = BW,
        bh = BH,
        label = esc(&label),
        xl = x(lo),
        xh = x(hi),
        xq1 = x(q1),
        xq3 = x(q3),
        xm = x(med),
        bwid = (x(q3) - x(q1)).max(1.0),
        mid = mid,
        wy0 = mid - 5.0,
        wy1 = mid + 5.0,
        y = y,
        yb = y + h,
        h = h,
        ty = ty,
        tlo = esc(&tlo),
        median_label = median_label,
        thi = esc(&thi),
    ))
}

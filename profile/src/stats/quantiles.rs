//! Quantiles from Apache DataSketches KLL sketches (`kll_sketch_agg_double|bigint` in Spark
//! produce the same bytes), and histograms derived from them.

use super::kll::{KllBuilder, KllItem};
use datasketches::common::SearchCriteria;
use datasketches::kll::{KllFloat, KllSketch};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;

/// A KLL sketch over the values of a numeric or temporal column.
#[derive(Debug, Clone)]
pub enum Quantiles {
    /// Floating-point values (NaN excluded).
    Float(Kll<f64>),
    /// Integers, dates, times, timestamps and durations, in their integer representation.
    Int(Kll<i64>),
}

/// One column's KLL state: values seen here go into a [`KllBuilder`] (the fast update path);
/// sketches merged in from elsewhere are kept as the `datasketches` crate's, which answers the
/// queries and does the merging.
#[derive(Debug, Clone)]
pub struct Kll<T: KllItem> {
    merged: Option<KllSketch<T::Sketch>>,
    fresh: KllBuilder<T>,
}

impl<T: KllItem> Kll<T> {
    fn new(k: u16) -> Self {
        Kll {
            merged: None,
            fresh: KllBuilder::new(k),
        }
    }

    fn from_sketch(sketch: KllSketch<T::Sketch>) -> Self {
        Kll {
            fresh: KllBuilder::new(sketch.k()),
            merged: Some(sketch),
        }
    }

    #[inline]
    fn update(&mut self, v: T) {
        self.fresh.update(v);
    }

    fn n(&self) -> u64 {
        self.fresh.n() + self.merged.as_ref().map_or(0, |m| m.n())
    }

    /// Everything seen, as one crate sketch.
    fn sketch(&self) -> Cow<'_, KllSketch<T::Sketch>> {
        let fresh = || {
            self.fresh
                .to_sketch()
                .expect("a KLL builder writes a valid DataSketches image")
        };
        match &self.merged {
            Some(m) if self.fresh.is_empty() => Cow::Borrowed(m),
            Some(m) => {
                let mut all = m.clone();
                // Same k and m on both sides, and n far below u64::MAX: merging cannot fail.
                let _ = all.merge(&fresh());
                Cow::Owned(all)
            }
            None => Cow::Owned(fresh()),
        }
    }

    fn quantiles(&self, ranks: &[f64], as_f64: impl Fn(T::Sketch) -> f64) -> Option<Vec<f64>> {
        let s = self.sketch();
        ranks
            .iter()
            .map(|&r| {
                s.quantile(r, SearchCriteria::Inclusive)
                    .ok()
                    .flatten()
                    .map(&as_f64)
            })
            .collect()
    }

    fn merge(&mut self, other: &Kll<T>) -> crate::Result<()> {
        let mut all = self.sketch().into_owned();
        all.merge(&other.sketch())
            .map_err(|e| crate::Error::Merge(format!("KLL: {e}")))?;
        self.fresh = KllBuilder::new(self.fresh.k());
        self.merged = Some(all);
        Ok(())
    }
}

impl Quantiles {
    pub fn new_float(k: u16) -> Quantiles {
        Quantiles::Float(Kll::new(k))
    }

    pub fn new_int(k: u16) -> Quantiles {
        Quantiles::Int(Kll::new(k))
    }

    /// A sketch of floats made elsewhere (Spark's `kll_sketch_agg_double`).
    pub fn from_float_sketch(sketch: KllSketch<KllFloat<f64>>) -> Quantiles {
        Quantiles::Float(Kll::from_sketch(sketch))
    }

    /// A sketch of integers made elsewhere (Spark's `kll_sketch_agg_bigint`).
    pub fn from_int_sketch(sketch: KllSketch<i64>) -> Quantiles {
        Quantiles::Int(Kll::from_sketch(sketch))
    }

    #[inline]
    pub fn update_float(&mut self, v: f64) {
        if let Quantiles::Float(s) = self
            && !v.is_nan()
        {
            s.update(v);
        }
    }

    #[inline]
    pub fn update_int(&mut self, v: i64) {
        if let Quantiles::Int(s) = self {
            s.update(v);
        }
    }

    pub fn merge(&mut self, other: &Quantiles) -> crate::Result<()> {
        match (self, other) {
            (Quantiles::Float(a), Quantiles::Float(b)) => a.merge(b),
            (Quantiles::Int(a), Quantiles::Int(b)) => a.merge(b),
            _ => Err(crate::Error::Merge(
                "quantile sketches of different kinds".into(),
            )),
        }
    }

    pub fn n(&self) -> u64 {
        match self {
            Quantiles::Float(s) => s.n(),
            Quantiles::Int(s) => s.n(),
        }
    }

    pub fn is_exact(&self) -> bool {
        match self {
            Quantiles::Float(s) => !s.sketch().is_estimation_mode(),
            Quantiles::Int(s) => !s.sketch().is_estimation_mode(),
        }
    }

    /// Normalized rank error of a single quantile query (99% confidence).
    pub fn rank_error(&self) -> f64 {
        match self {
            Quantiles::Float(s) => s.sketch().normalized_rank_error(),
            Quantiles::Int(s) => s.sketch().normalized_rank_error(),
        }
    }

    /// Normalized error of a histogram bin's mass (99% confidence).
    pub fn pmf_error(&self) -> f64 {
        match self {
            Quantiles::Float(s) => s.sketch().normalized_pmf_error(),
            Quantiles::Int(s) => s.sketch().normalized_pmf_error(),
        }
    }

    /// The values at normalized ranks `ranks` (inclusive search), as f64.
    pub fn quantiles(&self, ranks: &[f64]) -> Option<Vec<f64>> {
        match self {
            Quantiles::Float(s) => s.quantiles(ranks, |v| *v),
            Quantiles::Int(s) => s.quantiles(ranks, |v| v as f64),
        }
    }

    /// Fractions of values strictly below each point (points increasing).
    fn cdf_below(&self, points: &[f64]) -> Option<Vec<f64>> {
        self.cdf(points, false)
    }

    /// Fractions of values below each point, `inclusive`ly (at most the point) or not
    /// (strictly below), within [`Self::rank_error`]. `points` must increase strictly (and be
    /// finite; integers for an integer sketch, which truncates them); `None` when the sketch is
    /// empty or the points do not increase. The answer has one fraction more than `points`: 1.
    pub fn cdf(&self, points: &[f64], inclusive: bool) -> Option<Vec<f64>> {
        let criteria = if inclusive {
            SearchCriteria::Inclusive
        } else {
            SearchCriteria::Exclusive
        };
        match self {
            Quantiles::Float(s) => {
                let points: Vec<KllFloat<f64>> = points
                    .iter()
                    .filter_map(|&e| KllFloat::<f64>::new(e).ok())
                    .collect();
                s.sketch().cdf(&points, criteria).ok().flatten()
            }
            Quantiles::Int(s) => {
                let points: Vec<i64> = points.iter().map(|&p| p as i64).collect();
                s.sketch().cdf(&points, criteria).ok().flatten()
            }
        }
    }

    /// Counts of values in `bins` equal-width bins between `min` and `max`, estimated from the
    /// sketch's CDF.
    pub fn histogram(&self, min: f64, max: f64, bins: usize) -> Option<Vec<(f64, f64, u64)>> {
        let integer = matches!(self, Quantiles::Int(_));
        histogram(self.n(), min, max, bins, integer, |p| self.cdf_below(p))
    }

    fn to_bytes(&self) -> (u8, Vec<u8>) {
        match self {
            Quantiles::Float(s) => (0, s.sketch().serialize()),
            Quantiles::Int(s) => (1, s.sketch().serialize()),
        }
    }
}

/// Equal-width bins between `min` and `max` (the last bin includes `max`), counted from
/// `cdf_below` (the fraction of values strictly below each point). Integer columns spanning
/// fewer integers than bins get one bin per integer.
fn histogram(
    n: u64,
    min: f64,
    max: f64,
    bins: usize,
    integer: bool,
    cdf_below: impl Fn(&[f64]) -> Option<Vec<f64>>,
) -> Option<Vec<(f64, f64, u64)>> {
    if n == 0 || !min.is_finite() || !max.is_finite() || bins == 0 {
        return None;
    }
    if max <= min {
        return Some(vec![(min, max, n)]);
    }
    let count = |lo: f64, hi: f64| ((hi - lo) * n as f64).round().max(0.0) as u64;
    if integer && max - min < bins as f64 {
        let points: Vec<f64> = (min as i64 + 1..=max as i64).map(|v| v as f64).collect();
        let cdf = cdf_below(&points)?;
        let mut prev = 0.0;
        let mut out = Vec::with_capacity(points.len() + 1);
        for (v, rank) in (min as i64..=max as i64).zip(cdf.into_iter().chain([1.0])) {
            out.push((v as f64, v as f64, count(prev, rank)));
            prev = rank;
        }
        return Some(out);
    }
    let width = (max - min) / bins as f64;
    let mut edges: Vec<f64> = (1..bins).map(|i| min + width * i as f64).collect();
    if integer {
        // An integer lies below edge e exactly when it lies below ceil(e).
        edges.iter_mut().for_each(|e| *e = e.ceil());
    }
    let cdf = cdf_below(&edges)?;
    let mut out = Vec::with_capacity(bins);
    let mut prev = 0.0;
    for i in 0..bins {
        let rank = cdf.get(i).copied().unwrap_or(1.0);
        let lo = min + width * i as f64;
        let hi = if i + 1 == bins {
            max
        } else {
            min + width * (i + 1) as f64
        };
        out.push((lo, hi, count(prev, rank)));
        prev = rank;
    }
    Some(out)
}

/// Quantiles and histograms of exactly counted values, with the KLL sketch's semantics (the
/// inclusive quantile of rank r is the first value whose cumulative count reaches ⌈r·n⌉), so
/// that exact and sketched answers agree wherever the sketch is exact too.
pub struct ExactQuantiles {
    /// (value, cumulative count), by value.
    cumulative: Vec<(f64, u64)>,
    integer: bool,
}

impl ExactQuantiles {
    pub fn new(mut counts: Vec<(f64, u64)>, integer: bool) -> Self {
        counts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut total = 0;
        let cumulative = counts
            .into_iter()
            .map(|(v, c)| {
                total += c;
                (v, total)
            })
            .collect();
        ExactQuantiles {
            cumulative,
            integer,
        }
    }

    pub fn n(&self) -> u64 {
        self.cumulative.last().map_or(0, |c| c.1)
    }

    pub fn quantiles(&self, ranks: &[f64]) -> Option<Vec<f64>> {
        let n = self.n();
        if n == 0 {
            return None;
        }
        Some(
            ranks
                .iter()
                .map(|&r| {
                    let target = (r * n as f64).ceil() as u64;
                    let i = self.cumulative.partition_point(|c| c.1 < target);
                    self.cumulative[i.min(self.cumulative.len() - 1)].0
                })
                .collect(),
        )
    }

    /// Fractions of values below each point, `inclusive`ly (at most the point) or not
    /// (strictly below), one per point; `None` when there are no values.
    pub fn cdf(&self, points: &[f64], inclusive: bool) -> Option<Vec<f64>> {
        let n = self.n();
        if n == 0 {
            return None;
        }
        Some(
            points
                .iter()
                .map(|&p| {
                    let i = self
                        .cumulative
                        .partition_point(|c| if inclusive { c.0 <= p } else { c.0 < p });
                    if i == 0 {
                        0.0
                    } else {
                        self.cumulative[i - 1].1 as f64 / n as f64
                    }
                })
                .collect(),
        )
    }

    pub fn histogram(&self, min: f64, max: f64, bins: usize) -> Option<Vec<(f64, f64, u64)>> {
        let n = self.n() as f64;
        histogram(self.n(), min, max, bins, self.integer, |points| {
            Some(
                points
                    .iter()
                    .map(|&p| {
                        let i = self.cumulative.partition_point(|c| c.0 < p);
                        if i == 0 {
                            0.0
                        } else {
                            self.cumulative[i - 1].1 as f64 / n
                        }
                    })
                    .collect(),
            )
        })
    }
}

impl Serialize for Quantiles {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_bytes().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Quantiles {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let (kind, bytes) = <(u8, Vec<u8>)>::deserialize(deserializer)?;
        match kind {
            0 => KllSketch::deserialize(&bytes)
                .map(Quantiles::from_float_sketch)
                .map_err(D::Error::custom),
            1 => KllSketch::deserialize(&bytes)
                .map(Quantiles::from_int_sketch)
                .map_err(D::Error::custom),
            k => Err(D::Error::custom(format!(
                "unknown quantile sketch kind {k}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_for_small_inputs_and_round_trips() {
        let mut q = Quantiles::new_int(200);
        for v in 1..=100 {
            q.update_int(v);
        }
        assert!(q.is_exact());
        assert_eq!(
            q.quantiles(&[0.0, 0.5, 1.0]).unwrap(),
            vec![1.0, 50.0, 100.0]
        );
        let bytes = postcard::to_allocvec(&q).unwrap();
        let back: Quantiles = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.quantiles(&[0.25]), q.quantiles(&[0.25]));
        let h = q.histogram(1.0, 100.0, 3).unwrap();
        assert_eq!(h.iter().map(|b| b.2).sum::<u64>(), 100);
    }
}

//! Value counts: distinct count, most and least frequent values.
//!
//! A column's counts stay exact (a hash map of value → count) until it has more distinct
//! values than a limit; then an Apache DataSketches HLL sketch (distinct count) and a
//! frequent-items sketch (top values, with error bounds) take over, fed with the exact counts
//! gathered so far. The key column of a `hash`-partitioned plan is never limited: every value
//! of it lives in exactly one task, so each task reduces its exact counts to a summary (distinct
//! count, top and bottom values) and the merge adds the summaries up — exactly.

use super::frequent::{Frequent, TableKey};
use crate::limits::MAX_KEPT_STRING_CHARS;
use datasketches::common::NumStdDev;
use datasketches::frequencies::{ErrorType, FrequentItemValue, FrequentItemsSketch};
use datasketches::hash::value::{canonical_float, raw_bytes};
use datasketches::hll::{HllSketch, HllType, HllUnion};
use hashbrown::HashMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::{Borrow, Cow};
use std::collections::BTreeSet;
use std::hash::Hash;

/// The owned form of a counted value: `i64` for integers and temporal values, `u64` for the bit
/// pattern of a float, `String` for strings.
pub trait ValueKey:
    Clone
    + Eq
    + Hash
    + Ord
    + Send
    + Sync
    + Serialize
    + DeserializeOwned
    + FrequentItemValue
    + TableKey
    + std::fmt::Debug
    + 'static
{
    /// Whether the value is a string (a frequent-items table stores those apart).
    const STRING: bool;
}
impl ValueKey for i64 {
    const STRING: bool = false;
}
impl ValueKey for u64 {
    const STRING: bool = false;
}
impl ValueKey for String {
    const STRING: bool = true;
}

/// A borrowed value that can be counted and hashed the way other DataSketches libraries hash
/// the same value (Java's `update(long)`, `update(double)`, `update(String)`).
pub trait KeyRef: Hash + Eq + TableKey + ToOwned<Owned = Self::Key> {
    type Key: ValueKey + Borrow<Self>;
    fn hll_update(&self, hll: &mut HllSketch);
}

impl KeyRef for i64 {
    type Key = i64;
    #[inline]
    fn hll_update(&self, hll: &mut HllSketch) {
        hll.update(*self);
    }
}

impl KeyRef for u64 {
    type Key = u64;
    #[inline]
    fn hll_update(&self, hll: &mut HllSketch) {
        hll.update(canonical_float::from_f64(f64::from_bits(*self)));
    }
}

impl KeyRef for str {
    type Key = String;
    #[inline]
    fn hll_update(&self, hll: &mut HllSketch) {
        hll.update(raw_bytes::from_str(self));
    }
}

/// The first [`MAX_KEPT_STRING_CHARS`] characters of `s` (all of `s` when it is shorter). A
/// prefix of a fixed number of characters is monotone in string order (a ≤ b ⇒ prefix(a) ≤
/// prefix(b)), so the smallest prefix is the prefix of the smallest string, whatever order
/// partials are merged in: a column's min and max are kept this way.
pub fn string_prefix(s: &str) -> &str {
    // At most that many bytes: at most that many characters.
    if s.len() <= MAX_KEPT_STRING_CHARS {
        return s;
    }
    match s.char_indices().nth(MAX_KEPT_STRING_CHARS) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

/// The form in which a string is counted: itself, or for a string longer than
/// [`MAX_KEPT_STRING_CHARS`] characters its prefix, `…` and a 128-bit hash of the whole value,
/// so that exact maps and sketches hold a few KiB per value whatever its length while distinct
/// long values stay distinct. Such a key is longer than the limit, which no value kept whole
/// is (see [`is_shortened_key`]).
pub fn bounded_key(s: &str) -> Cow<'_, str> {
    let prefix = string_prefix(s);
    if prefix.len() == s.len() {
        return Cow::Borrowed(s);
    }
    Cow::Owned(format!(
        "{prefix}…{:032x}",
        xxhash_rust::xxh3::xxh3_128(s.as_bytes())
    ))
}

/// Whether a counted string is the [`bounded_key`] of a longer value (not the value itself).
pub fn is_shortened_key(k: &str) -> bool {
    k.len() > MAX_KEPT_STRING_CHARS && k.chars().nth(MAX_KEPT_STRING_CHARS).is_some()
}

/// Parameters shared by every partial of a column (they come from the plan's options).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueParams {
    /// Distinct values counted exactly before sketching; `None`: always exact.
    pub limit: Option<usize>,
    pub hll_lg_k: u8,
    pub freq_map_size: usize,
    pub top_k: usize,
}

/// A value with its count, as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopValue<K> {
    pub value: K,
    pub count: u64,
    /// For estimates: the true count lies in `[lower_bound, upper_bound]`.
    pub lower_bound: u64,
    pub upper_bound: u64,
}

/// What a column's values come to.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueSummary<K> {
    pub distinct: u64,
    pub distinct_exact: bool,
    /// 3-sigma (99.7%) bounds of the distinct count.
    pub distinct_bounds: (u64, u64),
    pub top: Vec<TopValue<K>>,
    pub top_exact: bool,
    /// Largest possible error of a reported top count.
    pub top_max_error: u64,
    /// Least frequent values; `None` once the counts are sketched.
    pub bottom: Option<Vec<TopValue<K>>>,
}

#[derive(Debug, Clone)]
enum Mode<K: ValueKey> {
    Exact(HashMap<K, u64>),
    Sketch {
        hll: HllSketch,
        /// Boxed: its table makes it far larger than the other modes.
        freq: Box<Frequent<K>>,
    },
    /// Exact summaries of disjoint value sets (hash buckets of one plan).
    Disjoint {
        plan: String,
        buckets: BTreeSet<u32>,
        distinct: u64,
        top: Vec<(K, u64)>,
        bottom: Vec<(K, u64)>,
        hll: HllSketch,
    },
}

/// Value counts of one column.
#[derive(Debug, Clone)]
pub struct Values<K: ValueKey> {
    params: ValueParams,
    mode: Mode<K>,
    /// Exact counts that left the map since the last `take_evicted` (for pattern statistics,
    /// which are computed from the map while it is exact).
    evicted: Vec<(K, u64)>,
}

impl<K: ValueKey> Values<K> {
    pub fn new(params: ValueParams) -> Self {
        Values {
            params,
            mode: Mode::Exact(HashMap::new()),
            evicted: Vec::new(),
        }
    }

    /// Exact counts, as another backend counted them (the counts of values beyond `params.limit`
    /// distinct ones go into the sketches, as [`Self::observe`] would put them).
    pub fn from_counts(params: ValueParams, counts: impl IntoIterator<Item = (K, u64)>) -> Self {
        let mut v = Values::new(params);
        if let Mode::Exact(map) = &mut v.mode {
            for (k, c) in counts {
                *map.entry(k).or_insert(0) += c;
            }
        }
        if let (Some(limit), Some(map)) = (params.limit, v.exact_counts())
            && map.len() > limit
        {
            v.switch_to_sketch();
            // Nothing tracks these: they were never in this partial's map.
            v.evicted.clear();
        }
        v
    }

    /// Sketches made elsewhere (Spark's `hll_sketch_agg` and `approx_top_k_accumulate` make the
    /// same DataSketches sketches, from the same hashes of the same values).
    pub fn from_sketches(
        params: ValueParams,
        hll: HllSketch,
        freq: FrequentItemsSketch<K>,
    ) -> Self {
        Values {
            params,
            mode: Mode::Sketch {
                hll,
                freq: Box::new(Frequent::from_sketch(freq)),
            },
            evicted: Vec::new(),
        }
    }

    pub fn is_exact_map(&self) -> bool {
        matches!(self.mode, Mode::Exact(_))
    }

    /// The exact map, while the counts are exact.
    pub fn exact_counts(&self) -> Option<&HashMap<K, u64>> {
        match &self.mode {
            Mode::Exact(m) => Some(m),
            _ => None,
        }
    }

    /// Counts one value. Returns whether it landed in the exact map (and so needs no per-value
    /// work that the map's entries can stand in for later).
    #[inline]
    pub fn observe<Q>(&mut self, key: &Q) -> bool
    where
        Q: KeyRef<Key = K> + ?Sized,
        K: Borrow<Q>,
    {
        if let Mode::Exact(map) = &mut self.mode {
            if let Some(c) = map.get_mut(key) {
                *c += 1;
                return true;
            }
            if self.params.limit.is_none_or(|limit| map.len() < limit) {
                map.insert(key.to_owned(), 1);
                return true;
            }
            self.switch_to_sketch();
        }
        match &mut self.mode {
            Mode::Sketch { hll, freq } => {
                key.hll_update(hll);
                freq.update(key, 1);
            }
            Mode::Disjoint { .. } | Mode::Exact(_) => {
                self.switch_to_sketch();
                return self.observe(key);
            }
        }
        false
    }

    /// Exact counts that have left the map since the last call.
    pub fn take_evicted(&mut self) -> Vec<(K, u64)> {
        std::mem::take(&mut self.evicted)
    }

    fn new_hll(&self) -> HllSketch {
        HllSketch::new(self.params.hll_lg_k, HllType::Hll8).expect("lg_k validated")
    }

    fn new_freq(&self) -> Box<Frequent<K>> {
        Box::new(Frequent::new(self.params.freq_map_size))
    }

    /// Leaves exact counting: everything seen so far goes into the sketches.
    fn switch_to_sketch(&mut self) {
        let mut hll = self.new_hll();
        let mut freq = self.new_freq();
        match std::mem::replace(&mut self.mode, Mode::Exact(HashMap::new())) {
            Mode::Exact(map) => {
                // In key order, not the map's (randomly seeded) order: the sketches then come
                // out the same on every run over the same rows.
                let mut counts: Vec<(K, u64)> = map.into_iter().collect();
                counts.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                for (k, c) in counts {
                    hll_update_owned(&k, &mut hll);
                    freq.update(&k, c);
                    self.evicted.push((k, c));
                }
            }
            Mode::Disjoint {
                top,
                bottom,
                hll: h,
                ..
            } => {
                hll = h;
                // Only the reported values' counts survive a summary; they seed the sketch.
                let mut seen = BTreeSet::new();
                for (k, c) in top.into_iter().chain(bottom) {
                    if seen.insert(k.clone()) {
                        freq.update(&k, c);
                    }
                }
            }
            sketch @ Mode::Sketch { .. } => {
                self.mode = sketch;
                return;
            }
        }
        self.mode = Mode::Sketch { hll, freq };
    }

    /// Ends a hash-partitioned task: its exact, unlimited counts become a summary that adds up
    /// with the other buckets' summaries.
    pub fn summarize_bucket(&mut self, plan: &str, bucket: u32) {
        let Mode::Exact(map) = &mut self.mode else {
            return;
        };
        let map = std::mem::take(map);
        let mut hll = self.new_hll();
        let mut keys: Vec<&K> = map.keys().collect();
        keys.sort_unstable();
        for k in keys {
            hll_update_owned(k, &mut hll);
        }
        let (top, bottom) =
            top_and_bottom(map.iter().map(|(k, c)| (k.clone(), *c)), self.params.top_k);
        let distinct = map.len() as u64;
        self.evicted.extend(map);
        self.mode = Mode::Disjoint {
            plan: plan.to_string(),
            buckets: BTreeSet::from([bucket]),
            distinct,
            top,
            bottom,
            hll,
        };
    }

    pub fn merge(&mut self, other: &Values<K>) -> crate::Result<()> {
        if self.params.hll_lg_k != other.params.hll_lg_k
            || self.params.freq_map_size != other.params.freq_map_size
        {
            return Err(crate::Error::Merge(
                "value sketches were made with different sizes".into(),
            ));
        }
        self.params.limit = match (self.params.limit, other.params.limit) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        self.params.top_k = self.params.top_k.max(other.params.top_k);
        // Disjoint summaries of different buckets of the same plan add up exactly.
        if let (
            Mode::Disjoint {
                plan: pa,
                buckets: ba,
                distinct: da,
                top: ta,
                bottom: boa,
                hll: ha,
            },
            Mode::Disjoint {
                plan: pb,
                buckets: bb,
                distinct: db,
                top: tb,
                bottom: bob,
                hll: hb,
            },
        ) = (&mut self.mode, &other.mode)
            && pa == pb
            && ba.is_disjoint(bb)
        {
            ba.extend(bb.iter().copied());
            *da += db;
            let k = self.params.top_k;
            let (top, _) = top_and_bottom(ta.iter().chain(tb).cloned(), k);
            let (_, bottom) = top_and_bottom(boa.iter().chain(bob).cloned(), k);
            *ta = top;
            *boa = bottom;
            *ha = union_hll(ha, hb, self.params.hll_lg_k);
            return Ok(());
        }
        if let (Mode::Exact(a), Mode::Exact(b)) = (&mut self.mode, &other.mode) {
            for (k, c) in b {
                match a.get_mut(k) {
                    Some(mine) => *mine += c,
                    None => {
                        a.insert(k.clone(), *c);
                    }
                }
            }
            if self.params.limit.is_some_and(|limit| a.len() > limit) {
                self.switch_to_sketch();
            }
            return Ok(());
        }
        // Otherwise both sides become sketches.
        self.switch_to_sketch();
        let mut theirs = other.clone();
        theirs.switch_to_sketch();
        // Their exact counts leave a map too: whoever tracks evictions must see them.
        self.evicted.append(&mut theirs.evicted);
        if let (Mode::Sketch { hll, freq }, Mode::Sketch { hll: h2, freq: f2 }) =
            (&mut self.mode, &theirs.mode)
        {
            *hll = union_hll(hll, h2, self.params.hll_lg_k);
            freq.merge(f2);
        }
        Ok(())
    }

    pub fn summary(&self) -> ValueSummary<K> {
        let k = self.params.top_k;
        let exact = |distinct: u64, top: Vec<(K, u64)>, bottom: Vec<(K, u64)>| ValueSummary {
            distinct,
            distinct_exact: true,
            distinct_bounds: (distinct, distinct),
            top: top.into_iter().map(exact_value).collect(),
            top_exact: true,
            top_max_error: 0,
            bottom: Some(bottom.into_iter().map(exact_value).collect()),
        };
        match &self.mode {
            Mode::Exact(map) => {
                let (top, bottom) = top_and_bottom(map.iter().map(|(k, c)| (k.clone(), *c)), k);
                exact(map.len() as u64, top, bottom)
            }
            Mode::Disjoint {
                distinct,
                top,
                bottom,
                ..
            } => exact(*distinct, top.clone(), bottom.clone()),
            Mode::Sketch { hll, freq } => {
                let freq = freq.sketch();
                let mut rows: Vec<TopValue<K>> = freq
                    .frequent_items(ErrorType::NoFalsePositives)
                    .into_iter()
                    .map(|r| TopValue {
                        value: r.item().clone(),
                        count: r.estimate(),
                        lower_bound: r.lower_bound(),
                        upper_bound: r.upper_bound(),
                    })
                    .collect();
                rows.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
                rows.truncate(k);
                let estimate = hll.estimate().round().max(0.0) as u64;
                ValueSummary {
                    distinct: estimate,
                    distinct_exact: false,
                    distinct_bounds: (
                        hll.lower_bound(NumStdDev::Three).floor().max(0.0) as u64,
                        hll.upper_bound(NumStdDev::Three).ceil() as u64,
                    ),
                    top: rows,
                    top_exact: false,
                    top_max_error: freq.maximum_error(),
                    bottom: None,
                }
            }
        }
    }
}

fn exact_value<K>((value, count): (K, u64)) -> TopValue<K> {
    TopValue {
        value,
        count,
        lower_bound: count,
        upper_bound: count,
    }
}

fn hll_update_owned<K: ValueKey>(k: &K, hll: &mut HllSketch) {
    // Dispatch on the concrete key type through the borrowed form.
    let any: &dyn std::any::Any = k;
    if let Some(v) = any.downcast_ref::<i64>() {
        v.hll_update(hll);
    } else if let Some(v) = any.downcast_ref::<u64>() {
        v.hll_update(hll);
    } else if let Some(v) = any.downcast_ref::<String>() {
        v.as_str().hll_update(hll);
    }
}

fn union_hll(a: &HllSketch, b: &HllSketch, lg_k: u8) -> HllSketch {
    let mut u = HllUnion::new(lg_k).expect("lg_k validated");
    u.update(a);
    u.update(b);
    u.to_sketch(HllType::Hll8)
}

/// The `k` most frequent (count desc, value asc) and `k` least frequent (count asc, value asc)
/// entries: a total order, so every merge order reports the same values.
fn top_and_bottom<K: Ord + Clone>(
    entries: impl Iterator<Item = (K, u64)>,
    k: usize,
) -> (Counts<K>, Counts<K>) {
    let mut all: Vec<(K, u64)> = entries.collect();
    // Entries of the same value (possible only when summaries overlap) are added up.
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all.dedup_by(|b, a| {
        if a.0 == b.0 {
            a.1 += b.1;
            true
        } else {
            false
        }
    });
    let mut top = all.clone();
    keep_first(&mut top, k, |a, b| {
        b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0))
    });
    let mut bottom = all;
    keep_first(&mut bottom, k, |a, b| {
        a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0))
    });
    (top, bottom)
}

/// Values with their counts.
type Counts<K> = Vec<(K, u64)>;

/// Keeps the first `k` entries in `order`, sorted.
fn keep_first<K>(
    v: &mut Counts<K>,
    k: usize,
    order: impl Fn(&(K, u64), &(K, u64)) -> std::cmp::Ordering,
) {
    if v.len() > k {
        v.select_nth_unstable_by(k - 1, &order);
        v.truncate(k);
    }
    v.sort_by(order);
}

/// The serialized form: sketches as their DataSketches bytes.
#[derive(Serialize, Deserialize)]
enum Stored<K> {
    Exact(Vec<(K, u64)>),
    Sketch {
        hll: Vec<u8>,
        freq: Vec<u8>,
    },
    Disjoint {
        plan: String,
        buckets: BTreeSet<u32>,
        distinct: u64,
        top: Vec<(K, u64)>,
        bottom: Vec<(K, u64)>,
        hll: Vec<u8>,
    },
}

impl<K: ValueKey> Serialize for Values<K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let stored = match &self.mode {
            Mode::Exact(map) => {
                let mut v: Vec<(K, u64)> = map.iter().map(|(k, c)| (k.clone(), *c)).collect();
                v.sort_by(|a, b| a.0.cmp(&b.0));
                Stored::Exact(v)
            }
            Mode::Sketch { hll, freq } => Stored::Sketch {
                hll: hll.serialize(),
                freq: freq.sketch().serialize(),
            },
            Mode::Disjoint {
                plan,
                buckets,
                distinct,
                top,
                bottom,
                hll,
            } => Stored::Disjoint {
                plan: plan.clone(),
                buckets: buckets.clone(),
                distinct: *distinct,
                top: top.clone(),
                bottom: bottom.clone(),
                hll: hll.serialize(),
            },
        };
        (self.params, stored).serialize(serializer)
    }
}

impl<'de, K: ValueKey> Deserialize<'de> for Values<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use crate::limits::{MAX_EXACT_DISTINCT_LIMIT, MAX_FREQUENT_MAP_SIZE, MAX_TOP_K, refuse};
        use serde::de::Error;
        let (params, stored) = <(ValueParams, Stored<K>)>::deserialize(deserializer)?;
        // Partials come from storage: sizes the sketches reject must fail here, not later, and
        // sizes that decide an allocation are capped before anything is allocated from them.
        if !(4..=21).contains(&params.hll_lg_k)
            || params.freq_map_size < 8
            || !params.freq_map_size.is_power_of_two()
            || params.top_k == 0
        {
            return Err(D::Error::custom(format!(
                "invalid value-count parameters {params:?}"
            )));
        }
        if params.freq_map_size > MAX_FREQUENT_MAP_SIZE {
            return Err(refuse(
                format!("frequent-items map size {}", params.freq_map_size),
                MAX_FREQUENT_MAP_SIZE,
            ));
        }
        if params.top_k > MAX_TOP_K {
            return Err(refuse(format!("top_k {}", params.top_k), MAX_TOP_K));
        }
        if let Some(limit) = params.limit
            && limit > MAX_EXACT_DISTINCT_LIMIT
        {
            return Err(refuse(
                format!("exact distinct limit {limit}"),
                MAX_EXACT_DISTINCT_LIMIT,
            ));
        }
        let hll = |b: &[u8]| HllSketch::deserialize(b).map_err(D::Error::custom);
        let mode = match stored {
            Stored::Exact(v) => {
                // A map is exact only up to its limit: more values are not a partial we wrote.
                if let Some(limit) = params.limit
                    && v.len() > limit
                {
                    return Err(refuse(
                        format!("{} exact values (more than its own limit)", v.len()),
                        limit,
                    ));
                }
                Mode::Exact(v.into_iter().collect())
            }
            Stored::Sketch { hll: h, freq } => {
                let image = super::frequent::checked_image(&freq)
                    .map_err(|r| refuse::<D::Error>(r.detail, r.limit))?;
                Mode::Sketch {
                    hll: hll(&h)?,
                    freq: Box::new(Frequent::from_sketch(
                        FrequentItemsSketch::deserialize(&image).map_err(D::Error::custom)?,
                    )),
                }
            }
            Stored::Disjoint {
                plan,
                buckets,
                distinct,
                top,
                bottom,
                hll: h,
            } if top.len() <= params.top_k && bottom.len() <= params.top_k => Mode::Disjoint {
                plan,
                buckets,
                distinct,
                top,
                bottom,
                hll: hll(&h)?,
            },
            Stored::Disjoint { top, bottom, .. } => {
                return Err(refuse(
                    format!(
                        "a summary of {} top and {} bottom values",
                        top.len(),
                        bottom.len()
                    ),
                    format!("top_k = {}", params.top_k),
                ));
            }
        };
        Ok(Values {
            params,
            mode,
            evicted: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(limit: Option<usize>) -> ValueParams {
        ValueParams {
            limit,
            hll_lg_k: 12,
            freq_map_size: 64,
            top_k: 3,
        }
    }

    #[test]
    fn exact_until_the_limit_then_sketched() {
        let mut v = Values::<i64>::new(params(Some(100)));
        for i in 0..100i64 {
            for _ in 0..=(i % 5) {
                assert!(v.observe(&i));
            }
        }
        let s = v.summary();
        assert!(s.distinct_exact);
        assert_eq!(s.distinct, 100);
        assert_eq!(s.top[0].value, 4);
        assert_eq!(s.top[0].count, 5);
        assert_eq!(s.bottom.as_ref().unwrap()[0].value, 0);
        assert!(!v.observe(&1000));
        assert_eq!(v.take_evicted().len(), 100);
        let s = v.summary();
        assert!(!s.distinct_exact);
        assert!(
            s.distinct_bounds.0 <= 101 && 101 <= s.distinct_bounds.1,
            "{s:?}"
        );
        assert!(s.bottom.is_none());
    }

    #[test]
    fn merges_exact_maps_and_overflows_on_merge() {
        let mut a = Values::<String>::new(params(Some(4)));
        let mut b = Values::<String>::new(params(Some(4)));
        for s in ["x", "y", "x"] {
            a.observe(s);
        }
        for s in ["z", "x"] {
            b.observe(s);
        }
        a.merge(&b).unwrap();
        let s = a.summary();
        assert_eq!(s.distinct, 3);
        assert_eq!((s.top[0].value.as_str(), s.top[0].count), ("x", 3));
        let mut c = Values::<String>::new(params(Some(4)));
        for s in ["p", "q"] {
            c.observe(s);
        }
        a.merge(&c).unwrap();
        assert!(!a.is_exact_map());
        assert_eq!(a.take_evicted().iter().map(|e| e.1).sum::<u64>(), 7);
    }

    #[test]
    fn disjoint_bucket_summaries_add_up_exactly() {
        let mut buckets: Vec<Values<i64>> = (0..3).map(|_| Values::new(params(None))).collect();
        for i in 0..3000i64 {
            let b = (i % 3) as usize;
            for _ in 0..(1 + (i % 7)) {
                buckets[b].observe(&i);
            }
        }
        for (i, b) in buckets.iter_mut().enumerate() {
            b.summarize_bucket("plan", i as u32);
        }
        let mut merged = buckets[2].clone();
        merged.merge(&buckets[0]).unwrap();
        merged.merge(&buckets[1]).unwrap();
        let s = merged.summary();
        assert!(s.distinct_exact);
        assert_eq!(s.distinct, 3000);
        assert_eq!(
            s.top.iter().map(|t| t.value).collect::<Vec<_>>(),
            vec![6, 13, 20]
        );
        assert_eq!(
            s.bottom
                .unwrap()
                .iter()
                .map(|t| t.value)
                .collect::<Vec<_>>(),
            vec![0, 7, 14]
        );
    }

    #[test]
    fn rejects_stored_parameters_the_sketches_cannot_take() {
        let mut v = Values::<i64>::new(params(Some(2)));
        v.observe(&1);
        v.params.hll_lg_k = 40;
        let bytes = postcard::to_allocvec(&v).unwrap();
        assert!(postcard::from_bytes::<Values<i64>>(&bytes).is_err());
    }

    #[test]
    fn round_trips_through_bytes() {
        let mut v = Values::<u64>::new(params(Some(2)));
        for f in [1.5f64, 2.5, 3.5, 1.5] {
            v.observe(&f.to_bits());
        }
        let bytes = postcard::to_allocvec(&v).unwrap();
        let back: Values<u64> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.summary(), v.summary());
    }
}

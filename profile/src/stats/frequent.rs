//! The frequent-items sketch's update side.
//!
//! Top values of a high-cardinality column come from an Apache DataSketches frequent-items
//! sketch (Misra–Gries with purges by the median count). The `datasketches` crate's sketch keys
//! its table by owned items hashed with MurmurHash3, so every new value of a string column costs
//! an allocation and a free, and those dominate a profile of unique strings. [`FrequentTable`]
//! is the same algorithm over flat arrays: numbers stored inline, strings in one arena that is
//! compacted at each purge, an xxh3 hash per item and a table with room to spare so probes stay
//! short. Only its state crosses into the crate, as the DataSketches serialized form (which other
//! DataSketches libraries read too), when a partial is merged, summarized or written.

use datasketches::frequencies::FrequentItemsSketch;
use std::borrow::Cow;
use std::marker::PhantomData;
use xxhash_rust::xxh3::xxh3_64;

use super::values::ValueKey;
use crate::limits::{MAX_FREQUENT_MAP_SIZE, Refusal};

/// DataSketches' constants for the frequent-items family (datasketches-java `PreambleUtil`).
const SERIAL_VERSION: u8 = 1;
const FAMILY_FREQUENCY: u8 = 10;
const PREAMBLE_LONGS_NONEMPTY: u8 = 4;
/// The sketch keeps at most 3/4 of its map size in items.
const LOAD_NUMERATOR: usize = 3;
const LOAD_DENOMINATOR: usize = 4;
/// Counts sampled for the median a purge subtracts (as DataSketches samples).
const SAMPLE_SIZE: usize = 1024;
/// Table slots per item the sketch may hold: a sparse table keeps linear probes short.
const SLOTS_PER_MAP_ENTRY: usize = 2;
/// The crate's smallest map (2^3 entries).
const LG_MIN_MAP_SIZE: u8 = 3;

/// How a counted value is stored in a [`FrequentTable`].
pub trait TableKey {
    fn count_into(&self, table: &mut FrequentTable, count: u64);
}

impl TableKey for i64 {
    #[inline]
    fn count_into(&self, table: &mut FrequentTable, count: u64) {
        table.update_word(*self as u64, count);
    }
}

impl TableKey for u64 {
    #[inline]
    fn count_into(&self, table: &mut FrequentTable, count: u64) {
        table.update_word(*self, count);
    }
}

impl TableKey for str {
    #[inline]
    fn count_into(&self, table: &mut FrequentTable, count: u64) {
        table.update_bytes(self.as_bytes(), count);
    }
}

impl TableKey for String {
    #[inline]
    fn count_into(&self, table: &mut FrequentTable, count: u64) {
        table.update_bytes(self.as_bytes(), count);
    }
}

/// Misra–Gries counts over a fixed number of items, in DataSketches' variant: when more than
/// `capacity` items are held, the median of the held counts is subtracted from every count,
/// items left at zero are dropped and the median is added to `offset`, the largest amount by
/// which any count may fall short of the truth.
#[derive(Debug, Clone)]
pub struct FrequentTable {
    lg_map_size: u8,
    capacity: usize,
    mask: usize,
    /// Per slot: the item's hash, its word (a number, or where its string starts in the
    /// arena), its string's length, its count (0: free).
    hashes: Vec<u64>,
    words: Vec<u64>,
    lens: Vec<usize>,
    counts: Vec<u64>,
    /// The occupied slots, in the order their items arrived: purges visit these, not the
    /// whole (mostly empty) table.
    occupied: Vec<u32>,
    stream_weight: u64,
    offset: u64,
    /// The strings of string items, one after the other.
    arena: Vec<u8>,
    strings: bool,
    /// Reused by purges: sampled counts, surviving items, the other arena.
    scratch: Vec<u64>,
    survivors: Vec<(u64, u64, usize, u64)>,
    spare: Vec<u8>,
}

impl FrequentTable {
    /// An empty table for a sketch of `map_size` (a power of two ≥ 8) holding numbers, or
    /// strings when `strings`.
    ///
    /// The table is allocated at the first update: a sketch read from a partial carries one
    /// that may never be used, and at the largest map size it takes 64 MiB.
    pub fn new(map_size: usize, strings: bool) -> Self {
        let lg_map_size = map_size.trailing_zeros() as u8;
        let slots = map_size * SLOTS_PER_MAP_ENTRY;
        FrequentTable {
            lg_map_size,
            capacity: map_size * LOAD_NUMERATOR / LOAD_DENOMINATOR,
            mask: slots - 1,
            hashes: Vec::new(),
            words: Vec::new(),
            lens: Vec::new(),
            counts: Vec::new(),
            occupied: Vec::new(),
            stream_weight: 0,
            offset: 0,
            arena: Vec::new(),
            strings,
            scratch: Vec::new(),
            survivors: Vec::new(),
            spare: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.stream_weight == 0
    }

    /// Allocates the table, before the first update.
    #[cold]
    fn allocate(&mut self) {
        let slots = self.mask + 1;
        self.hashes = vec![0; slots];
        self.words = vec![0; slots];
        if self.strings {
            self.lens = vec![0; slots];
        }
        self.counts = vec![0; slots];
        self.occupied = Vec::with_capacity(self.capacity + 1);
    }

    /// Counts a number (an `i64`, or a float's bits).
    #[inline]
    pub fn update_word(&mut self, word: u64, count: u64) {
        debug_assert!(!self.strings);
        if self.counts.is_empty() {
            self.allocate();
        }
        let hash = mix(word);
        let mut i = hash as usize & self.mask;
        loop {
            if self.counts[i] == 0 {
                self.insert(i, hash, word, 0, count);
                return;
            }
            if self.words[i] == word {
                self.add(i, count);
                return;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Counts a string.
    #[inline]
    pub fn update_bytes(&mut self, bytes: &[u8], count: u64) {
        debug_assert!(self.strings);
        if self.counts.is_empty() {
            self.allocate();
        }
        let hash = xxh3_64(bytes);
        let mut i = hash as usize & self.mask;
        loop {
            if self.counts[i] == 0 {
                let start = self.arena.len() as u64;
                self.arena.extend_from_slice(bytes);
                self.insert(i, hash, start, bytes.len(), count);
                return;
            }
            if self.hashes[i] == hash && self.stored(i) == bytes {
                self.add(i, count);
                return;
            }
            i = (i + 1) & self.mask;
        }
    }

    #[inline]
    fn add(&mut self, slot: usize, count: u64) {
        self.counts[slot] += count;
        self.stream_weight += count;
    }

    #[inline]
    fn insert(&mut self, slot: usize, hash: u64, word: u64, len: usize, count: u64) {
        self.hashes[slot] = hash;
        self.words[slot] = word;
        if self.strings {
            self.lens[slot] = len;
        }
        self.counts[slot] = count;
        self.stream_weight += count;
        self.occupied.push(slot as u32);
        if self.occupied.len() > self.capacity {
            self.purge();
        }
    }

    /// The string of the item in `slot`.
    fn stored(&self, slot: usize) -> &[u8] {
        let start = self.words[slot] as usize;
        &self.arena[start..start + self.lens[slot]]
    }

    /// Subtracts the median count (of the first `SAMPLE_SIZE` held items, as DataSketches
    /// samples) from every count and drops the items it brings to zero.
    #[cold]
    fn purge(&mut self) {
        let sample = SAMPLE_SIZE.min(self.capacity);
        self.scratch.clear();
        self.scratch.extend(
            self.occupied
                .iter()
                .take(sample)
                .map(|&i| self.counts[i as usize]),
        );
        let mid = self.scratch.len() / 2;
        let (_, &mut median, _) = self.scratch.select_nth_unstable(mid);
        self.offset += median;

        // Survivors are few (a purge drops at least half the items; all of them when every
        // value is new): take them out and put them back, with their strings copied into a
        // fresh arena.
        let mut survivors = std::mem::take(&mut self.survivors);
        for &i in &self.occupied {
            let i = i as usize;
            let c = self.counts[i];
            if c > median {
                let len = if self.strings { self.lens[i] } else { 0 };
                survivors.push((self.hashes[i], self.words[i], len, c - median));
            }
            self.counts[i] = 0;
        }
        self.occupied.clear();
        let mut old_arena = std::mem::take(&mut self.spare);
        old_arena.clear();
        std::mem::swap(&mut self.arena, &mut old_arena);
        for (hash, mut word, len, count) in survivors.drain(..) {
            if self.strings {
                let start = word as usize;
                word = self.arena.len() as u64;
                self.arena.extend_from_slice(&old_arena[start..start + len]);
            }
            let mut i = hash as usize & self.mask;
            while self.counts[i] != 0 {
                i = (i + 1) & self.mask;
            }
            self.hashes[i] = hash;
            self.words[i] = word;
            if self.strings {
                self.lens[i] = len;
            }
            self.counts[i] = count;
            self.occupied.push(i as u32);
        }
        self.survivors = survivors;
        self.spare = old_arena;
    }

    /// The DataSketches serialized form of this state (`FrequentItemsSketch::serialize`'s
    /// layout, the map at its largest size).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.occupied.len() * 16 + self.arena.len());
        out.extend_from_slice(&[
            PREAMBLE_LONGS_NONEMPTY,
            SERIAL_VERSION,
            FAMILY_FREQUENCY,
            self.lg_map_size,
            self.lg_map_size,
            0, // flags
            0,
            0,
        ]);
        out.extend_from_slice(&(self.occupied.len() as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.stream_weight.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        for &i in &self.occupied {
            out.extend_from_slice(&self.counts[i as usize].to_le_bytes());
        }
        for &i in &self.occupied {
            let i = i as usize;
            if self.strings {
                let bytes = self.stored(i);
                out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                out.extend_from_slice(bytes);
            } else {
                out.extend_from_slice(&self.words[i].to_le_bytes());
            }
        }
        out
    }
}

/// A stored frequent-items image, checked before the crate reads it: the crate allocates a map of
/// the image's `lg_cur_map_size` (up to 2^30 entries, tens of GiB) whatever the number of items
/// the image holds. An image over [`MAX_FREQUENT_MAP_SIZE`] is refused; a current map size larger
/// than the image's items need is lowered to what they need (the crate grows the map again as
/// items come, up to the maximum size, which alone decides when counts are purged, so the
/// sketch counts the same).
pub fn checked_image(bytes: &[u8]) -> Result<Cow<'_, [u8]>, Refusal> {
    let (Some(&lg_max), Some(&lg_cur)) = (bytes.get(3), bytes.get(4)) else {
        // Too short to be an image: the crate says what is wrong with it.
        return Ok(Cow::Borrowed(bytes));
    };
    let max_lg = MAX_FREQUENT_MAP_SIZE.trailing_zeros();
    if u32::from(lg_max) > max_lg {
        return Err(Refusal {
            detail: format!(
                "a frequent-items sketch with a map of 2^{lg_max} entries (lg_max_map_size {lg_max})"
            ),
            limit: format!("2^{max_lg} entries ({MAX_FREQUENT_MAP_SIZE})"),
        });
    }
    let items = match bytes.get(8..12) {
        Some(b) if bytes[0] & 0x3F == PREAMBLE_LONGS_NONEMPTY => {
            u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize
        }
        // Empty images are read at the smallest map size by the crate.
        _ => return Ok(Cow::Borrowed(bytes)),
    };
    let mut needed = LG_MIN_MAP_SIZE;
    while ((1usize << needed) * LOAD_NUMERATOR / LOAD_DENOMINATOR) < items && needed < lg_cur {
        needed += 1;
    }
    if needed >= lg_cur {
        return Ok(Cow::Borrowed(bytes));
    }
    let mut image = bytes.to_vec();
    image[4] = needed;
    Ok(Cow::Owned(image))
}

/// A 64-bit finalizer (splitmix64's), so that sequential numbers spread over the table.
#[inline]
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A column's frequent-items state: counts made here, in a [`FrequentTable`], plus a
/// DataSketches sketch of everything merged in from elsewhere.
#[derive(Debug, Clone)]
pub struct Frequent<K: ValueKey> {
    map_size: usize,
    merged: Option<FrequentItemsSketch<K>>,
    fresh: FrequentTable,
    _key: PhantomData<K>,
}

impl<K: ValueKey + TableKey> Frequent<K> {
    pub fn new(map_size: usize) -> Self {
        Frequent {
            map_size,
            merged: None,
            fresh: FrequentTable::new(map_size, K::STRING),
            _key: PhantomData,
        }
    }

    /// A sketch made elsewhere (another backend's, or a stored partial's).
    pub fn from_sketch(sketch: FrequentItemsSketch<K>) -> Self {
        let mut f = Frequent::new(sketch.max_map_size());
        f.merged = Some(sketch);
        f
    }

    #[inline]
    pub fn update<Q: TableKey + ?Sized>(&mut self, key: &Q, count: u64) {
        key.count_into(&mut self.fresh, count);
    }

    /// Everything counted, as one DataSketches sketch.
    pub fn sketch(&self) -> FrequentItemsSketch<K> {
        let fresh = (!self.fresh.is_empty()).then(|| {
            FrequentItemsSketch::<K>::deserialize(&self.fresh.to_bytes())
                .expect("a frequent-items table writes a valid DataSketches image")
        });
        match (&self.merged, fresh) {
            (Some(m), Some(f)) => {
                let mut m = m.clone();
                m.merge(&f);
                m
            }
            (Some(m), None) => m.clone(),
            (None, Some(f)) => f,
            (None, None) => FrequentItemsSketch::new(self.map_size).expect("map size validated"),
        }
    }

    pub fn merge(&mut self, other: &Frequent<K>) {
        let mut all = self.sketch();
        all.merge(&other.sketch());
        self.merged = Some(all);
        self.fresh = FrequentTable::new(self.map_size, K::STRING);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datasketches::frequencies::ErrorType;
    use std::collections::HashMap;

    /// Items with a skewed distribution: item i appears about n / (i + 1) times, plus a long tail
    /// of values seen once.
    fn stream(n: usize) -> Vec<i64> {
        let mut out = Vec::new();
        for i in 0..200i64 {
            for _ in 0..n / (i as usize + 1) {
                out.push(i);
            }
        }
        out.extend(1_000_000..1_000_000 + n as i64);
        // A fixed shuffle (an LCG), so heavy items are spread through the stream.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for i in (1..out.len()).rev() {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            out.swap(i, (state >> 33) as usize % (i + 1));
        }
        out
    }

    #[test]
    fn exact_while_the_items_fit() {
        let mut f = Frequent::<String>::new(64);
        for (s, n) in [("a", 5u64), ("b", 3), ("", 2), ("東京", 1)] {
            for _ in 0..n {
                f.update(s, 1);
            }
        }
        let mut direct = FrequentItemsSketch::<String>::new(64).unwrap();
        for (s, n) in [("a", 5u64), ("b", 3), ("", 2), ("東京", 1)] {
            direct.update_with_count(s.to_string(), n);
        }
        let s = f.sketch();
        assert_eq!(s.total_weight(), 11);
        assert_eq!(s.maximum_error(), 0);
        for item in ["a", "b", "", "東京", "zzz"] {
            assert_eq!(s.estimate(item), direct.estimate(item), "{item}");
        }
    }

    #[test]
    fn bounds_hold_after_many_purges_for_numbers_and_strings() {
        let data = stream(20_000);
        let mut truth: HashMap<i64, u64> = HashMap::new();
        for &v in &data {
            *truth.entry(v).or_default() += 1;
        }
        let mut ints = Frequent::<i64>::new(128);
        let mut strings = Frequent::<String>::new(128);
        for &v in &data {
            ints.update(&v, 1);
            strings.update(v.to_string().as_str(), 1);
        }
        let (ints, strings) = (ints.sketch(), strings.sketch());
        let w = data.len() as u64;
        for s in [&ints.total_weight(), &strings.total_weight()] {
            assert_eq!(*s, w);
        }
        // DataSketches' a-priori guarantee: UB - LB <= epsilon * W.
        let bound = (ints.epsilon() * w as f64).ceil() as u64;
        assert!(
            ints.maximum_error() <= bound,
            "{} > {bound}",
            ints.maximum_error()
        );
        assert!(strings.maximum_error() <= bound);
        for (v, &t) in &truth {
            assert!(
                ints.lower_bound(v) <= t && t <= ints.upper_bound(v),
                "{v}: {t}"
            );
            let key = v.to_string();
            assert!(strings.lower_bound(key.as_str()) <= t);
            assert!(t <= strings.upper_bound(key.as_str()));
        }
        // The heaviest items are reported, with no false positives.
        let top: Vec<i64> = ints
            .frequent_items(ErrorType::NoFalsePositives)
            .iter()
            .map(|r| *r.item())
            .collect();
        for heavy in 0..5 {
            assert!(top.contains(&heavy), "{heavy} missing from {top:?}");
        }
    }

    #[test]
    fn merges_with_sketches_made_by_the_crate() {
        let data = stream(5_000);
        let (left, right) = data.split_at(data.len() / 3);
        let mut mine = Frequent::<i64>::new(128);
        for v in left {
            mine.update(v, 1);
        }
        let mut theirs = FrequentItemsSketch::<i64>::new(128).unwrap();
        for &v in right {
            theirs.update(v);
        }
        mine.merge(&Frequent::from_sketch(theirs));
        for v in &right[..10] {
            mine.update(v, 1);
        }
        let s = mine.sketch();
        assert_eq!(s.total_weight(), data.len() as u64 + 10);
        let truth = data.iter().filter(|&&v| v == 0).count() as u64
            + right[..10].iter().filter(|&&v| v == 0).count() as u64;
        assert!(s.lower_bound(&0) <= truth && truth <= s.upper_bound(&0));
        let bytes = s.serialize();
        assert_eq!(
            FrequentItemsSketch::<i64>::deserialize(&bytes)
                .unwrap()
                .total_weight(),
            s.total_weight()
        );
    }

    #[test]
    fn same_stream_same_image() {
        let data = stream(3_000);
        let image = || {
            let mut f = FrequentTable::new(64, true);
            for v in &data {
                f.update_bytes(v.to_string().as_bytes(), 1);
            }
            f.to_bytes()
        };
        assert_eq!(image(), image());
    }
}

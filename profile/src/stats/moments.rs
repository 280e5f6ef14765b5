//! Central moments up to the fourth, merged with the parallel formulas of Chan et al. and
//! Pébay (2008), so that partial results combine into the single-pass answer.

use serde::{Deserialize, Serialize};

/// Count, mean and the sums of 2nd, 3rd and 4th powers of deviations from the mean.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    pub n: u64,
    pub mean: f64,
    pub m2: f64,
    pub m3: f64,
    pub m4: f64,
}

impl Moments {
    /// Moments of a slice, in two passes (mean first, then deviations) for accuracy.
    pub fn of_slice(values: &[f64]) -> Moments {
        if values.is_empty() {
            return Moments::default();
        }
        // Four independent accumulators per sum: the additions of one lane do not wait for
        // the previous lane's, so the loops run at the CPU's throughput, not its latency.
        const LANES: usize = 4;
        let n = values.len() as f64;
        let chunks = values.chunks_exact(LANES);
        let tail = chunks.remainder();
        let mut sums = [0.0; LANES];
        for c in chunks.clone() {
            for (sum, &v) in sums.iter_mut().zip(c) {
                *sum += v;
            }
        }
        let mean = (sums.iter().sum::<f64>() + tail.iter().sum::<f64>()) / n;
        let (mut m2, mut m3, mut m4) = ([0.0; LANES], [0.0; LANES], [0.0; LANES]);
        let mut add = |l: usize, v: f64| {
            let d = v - mean;
            let d2 = d * d;
            m2[l] += d2;
            m3[l] += d2 * d;
            m4[l] += d2 * d2;
        };
        for c in chunks {
            for (l, &v) in c.iter().enumerate() {
                add(l, v);
            }
        }
        for &v in tail {
            add(0, v);
        }
        let [m2, m3, m4] = [m2, m3, m4].map(|lanes| lanes.iter().sum::<f64>());
        Moments {
            n: values.len() as u64,
            mean,
            m2,
            m3,
            m4,
        }
    }

    /// Combines two disjoint samples' moments (Pébay 2008, eq. 3.1).
    pub fn merge(&mut self, other: &Moments) {
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *other;
            return;
        }
        let (na, nb) = (self.n as f64, other.n as f64);
        let n = na + nb;
        let delta = other.mean - self.mean;
        let d_n = delta / n;
        let d_n2 = d_n * d_n;
        let term1 = delta * d_n * na * nb;
        let mean = self.mean + d_n * nb;
        let m4 = self.m4
            + other.m4
            + term1 * d_n2 * (na * na - na * nb + nb * nb)
            + 6.0 * d_n2 * (na * na * other.m2 + nb * nb * self.m2)
            + 4.0 * d_n * (na * other.m3 - nb * self.m3);
        let m3 = self.m3
            + other.m3
            + term1 * d_n * (na - nb)
            + 3.0 * d_n * (na * other.m2 - nb * self.m2);
        let m2 = self.m2 + other.m2 + term1;
        *self = Moments {
            n: self.n + other.n,
            mean,
            m2,
            m3,
            m4,
        };
    }

    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then_some(self.mean)
    }

    /// Sample variance (n − 1 in the denominator), as pandas, polars and DuckDB report it.
    pub fn variance(&self) -> Option<f64> {
        (self.n > 1).then(|| self.m2 / (self.n as f64 - 1.0))
    }

    pub fn std(&self) -> Option<f64> {
        self.variance().map(f64::sqrt)
    }

    /// Population skewness g1 = √n·M3 / M2^1.5 (undefined for a constant column).
    pub fn skewness(&self) -> Option<f64> {
        (self.n > 2 && self.m2 > 0.0).then(|| (self.n as f64).sqrt() * self.m3 / self.m2.powf(1.5))
    }

    /// Excess kurtosis g2 = n·M4 / M2² − 3 (0 for a normal distribution).
    pub fn kurtosis(&self) -> Option<f64> {
        (self.n > 3 && self.m2 > 0.0).then(|| self.n as f64 * self.m4 / (self.m2 * self.m2) - 3.0)
    }
}

/// A compensated (Neumaier) sum: accurate to the last bits whatever the order of additions,
/// so that partial sums merge into (nearly) the single-pass sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct NeumaierSum {
    pub sum: f64,
    pub compensation: f64,
}

impl NeumaierSum {
    #[inline]
    pub fn add(&mut self, v: f64) {
        let t = self.sum + v;
        if self.sum.abs() >= v.abs() {
            self.compensation += (self.sum - t) + v;
        } else {
            self.compensation += (v - t) + self.sum;
        }
        self.sum = t;
    }

    /// Adds every value of a slice, in four interleaved compensated sums (independent chains
    /// of additions run in parallel on the CPU), folded together at the end.
    pub fn add_slice(&mut self, values: &[f64]) {
        const LANES: usize = 4;
        let mut lanes = [NeumaierSum::default(); LANES];
        let chunks = values.chunks_exact(LANES);
        for &v in chunks.remainder() {
            self.add(v);
        }
        for c in chunks {
            for (lane, &v) in lanes.iter_mut().zip(c) {
                lane.add(v);
            }
        }
        for lane in &lanes {
            self.merge(lane);
        }
    }

    pub fn merge(&mut self, other: &NeumaierSum) {
        self.add(other.sum);
        self.add(other.compensation);
    }

    pub fn value(&self) -> f64 {
        self.sum + self.compensation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
    }

    #[test]
    fn merged_moments_equal_single_pass() {
        let data: Vec<f64> = (0..1000)
            .map(|i| ((i * 7919) % 1013) as f64 * 0.37 - 50.0)
            .collect();
        let whole = Moments::of_slice(&data);
        for cut in [1, 10, 333, 999] {
            let mut a = Moments::of_slice(&data[..cut]);
            a.merge(&Moments::of_slice(&data[cut..]));
            assert_eq!(a.n, whole.n);
            for (x, y) in [
                (a.mean, whole.mean),
                (a.m2, whole.m2),
                (a.m3, whole.m3),
                (a.m4, whole.m4),
            ] {
                assert!(close(x, y), "cut {cut}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn statistics_match_textbook_values() {
        let m = Moments::of_slice(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(m.mean(), Some(5.0));
        assert!(close(m.variance().unwrap(), 32.0 / 7.0));
        assert!(close(m.skewness().unwrap(), 0.65625));
        assert!(close(m.kurtosis().unwrap(), -0.21875));
        assert_eq!(Moments::of_slice(&[3.0, 3.0, 3.0, 3.0]).skewness(), None);
    }

    #[test]
    fn compensated_sum_is_order_independent() {
        let mut a = NeumaierSum::default();
        for v in [1e16, 1.0, -1e16, 1.0] {
            a.add(v);
        }
        assert_eq!(a.value(), 2.0);
        let mut b = NeumaierSum::default();
        b.add_slice(&[1e16, 1.0, -1e16, 1.0, 3.0, 1e-3, -3.0]);
        assert_eq!(b.value(), 2.001);
    }
}

//! What the benchmarks share to make their figures: a deterministic
//! workload generator, and medians that resist a noisy, shared machine.

use std::time::{Duration, Instant};

/// xorshift64*: deterministic and dependency-free, so that every run of a
/// bench measures the same workload.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// One of `items`.
    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// The median; the mean of the middle two of an even count, NaN of none.
#[must_use]
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => f64::midpoint(v[n / 2 - 1], v[n / 2]),
    }
}

/// Rates measured over several windows, slowest first.
#[derive(Clone, Debug, PartialEq)]
pub struct Rates(Vec<f64>);

impl Rates {
    #[must_use]
    pub fn min(&self) -> f64 {
        self.0.first().copied().unwrap_or(f64::NAN)
    }

    #[must_use]
    pub fn median(&self) -> f64 {
        median(&self.0)
    }

    #[must_use]
    pub fn max(&self) -> f64 {
        self.0.last().copied().unwrap_or(f64::NAN)
    }
}

/// Runs `pass` (which returns how many items it did) for `warm_up`, then
/// for `windows` windows of `window` each, and returns the items per second
/// of each window. The machine is shared and noisy: the median of short
/// windows resists a neighbour's burst better than one long average.
pub fn rates(
    warm_up: Duration,
    window: Duration,
    windows: usize,
    mut pass: impl FnMut() -> usize,
) -> Rates {
    let warm = Instant::now();
    while warm.elapsed() < warm_up {
        pass();
    }
    let mut rates: Vec<f64> = (0..windows)
        .map(|_| {
            let start = Instant::now();
            let mut n = 0usize;
            while start.elapsed() < window {
                n += pass();
            }
            n as f64 / start.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    Rates(rates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_xorshift64_star() {
        let mut rng = Rng(1);
        // The first outputs of xorshift64* (12, 25, 27) from state 1.
        assert_eq!(rng.next_u64(), 5_180_492_295_206_395_165);
        assert_eq!(rng.next_u64(), 12_380_297_144_915_551_517);
        let mut a = Rng(0x5EED);
        let mut b = Rng(0x5EED);
        for _ in 0..1000 {
            let n = a.below(7);
            assert!(n < 7);
            assert_eq!(n, b.below(7));
        }
        assert_eq!(Rng(9).pick(&["only"]), "only");
    }

    #[test]
    fn medians_of_odd_and_even_samples() {
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < f64::EPSILON);
        assert!((median(&[4.0, 1.0, 3.0, 2.0]) - 2.5).abs() < f64::EPSILON);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn rates_are_per_window_and_sorted() {
        let mut passes = 0;
        let r = rates(Duration::ZERO, Duration::from_millis(5), 3, || {
            passes += 1;
            10
        });
        assert!(passes >= 3);
        assert_eq!(r.0.len(), 3);
        assert!(r.min() <= r.median() && r.median() <= r.max());
        assert!(r.min() > 0.0);
        let none = rates(Duration::ZERO, Duration::ZERO, 0, || 1);
        assert!(none.min().is_nan() && none.median().is_nan() && none.max().is_nan());
    }
}

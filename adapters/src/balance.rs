//! Choosing an endpoint: the power of two choices over outstanding requests. Two candidates are
//! drawn at random and the one with fewer requests in flight wins, which tracks the least-loaded
//! endpoint closely without scanning them all or herding every request onto one.

use std::sync::atomic::{AtomicU64, Ordering};

/// A small, lock-free random source (splitmix64 over an atomic counter): good enough to spread
/// load, and seedable so that tests are repeatable.
#[derive(Debug)]
pub struct Rng(AtomicU64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }

    /// A generator seeded from the clock, different for each service.
    pub fn from_time() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x5eed, |d| u64::try_from(d.as_nanos() & u128::from(u64::MAX)).unwrap_or(0x5eed));
        Self::new(nanos)
    }

    /// The next number.
    pub fn next(&self) -> u64 {
        let mut z = self.0.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n` > 0).
    fn below(&self, n: usize) -> usize {
        // The modulo bias is immaterial for a handful of endpoints.
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }
}

/// Picks one of `candidates` (indices of endpoints that may take the request) by the power of
/// two choices, `load` giving each one's outstanding requests. `None` when there is no candidate.
pub fn pick(candidates: &[usize], load: impl Fn(usize) -> u32, rng: &Rng) -> Option<usize> {
    match candidates.len() {
        0 => None,
        1 => Some(candidates[0]),
        n => {
            let a = rng.below(n);
            // A second draw among the others, so the two are always distinct.
            let b = (a + 1 + rng.below(n - 1)) % n;
            let (a, b) = (candidates[a], candidates[b]);
            Some(if load(b) < load(a) { b } else { a })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_candidate_gives_none_and_one_gives_itself() {
        let rng = Rng::new(1);
        assert_eq!(pick(&[], |_| 0, &rng), None);
        assert_eq!(pick(&[7], |_| 100, &rng), Some(7));
    }

    #[test]
    fn equal_load_spreads_evenly_over_the_candidates() {
        let rng = Rng::new(42);
        let mut hits = [0u32; 4];
        for _ in 0..40_000 {
            hits[pick(&[0, 1, 2, 3], |_| 0, &rng).unwrap()] += 1;
        }
        for h in hits {
            // 10 000 expected each; a fair draw stays well within 5 %.
            assert!((9_500..=10_500).contains(&h), "{hits:?}");
        }
    }

    #[test]
    fn of_two_endpoints_the_less_loaded_always_wins() {
        let rng = Rng::new(3);
        for _ in 0..1000 {
            assert_eq!(pick(&[0, 1], |i| if i == 0 { 5 } else { 2 }, &rng), Some(1));
        }
    }

    #[test]
    fn a_loaded_endpoint_gets_a_small_share_and_the_most_loaded_none() {
        // Loads 0, 1, 2, 3: the most loaded loses every comparison, the least loaded wins every
        // one it is drawn into (half of all draws, for four endpoints).
        let rng = Rng::new(9);
        let mut hits = [0u32; 4];
        for _ in 0..12_000 {
            hits[pick(&[0, 1, 2, 3], |i| i as u32, &rng).unwrap()] += 1;
        }
        assert_eq!(hits[3], 0, "{hits:?}");
        assert!(hits[0] > hits[1] && hits[1] > hits[2] && hits[2] > 0, "{hits:?}");
        assert!((5_500..=6_500).contains(&hits[0]), "{hits:?}");
    }

    #[test]
    fn only_candidates_are_ever_picked() {
        let rng = Rng::new(5);
        for _ in 0..1000 {
            let got = pick(&[2, 5, 9], |_| 0, &rng).unwrap();
            assert!([2, 5, 9].contains(&got));
        }
    }
}

//! Seeded Gaussian noise that is the same on every platform and backend: ChaCha20
//! (`rand_chacha`, seeded with `seed_from_u64`) feeding a Box–Muller transform in f64.
//! The GPU's random generator is never used, so a seed means the same image everywhere.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// `n` standard normal samples from `seed`.
///
/// Each pair comes from two 53-bit uniforms `u1, u2` in (0, 1]:
/// `sqrt(-2 ln u1) * (cos 2πu2, sin 2πu2)`, rounded to f32.
pub fn gaussian(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut uniform = || 1.0 - (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let (u1, u2) = (uniform(), uniform());
        let r = (-2.0 * u1.ln()).sqrt();
        let a = std::f64::consts::TAU * u2;
        out.push((r * a.cos()) as f32);
        out.push((r * a.sin()) as f32);
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_reproducible_and_standard() {
        let a = gaussian(42, 20001);
        assert_eq!(a, gaussian(42, 20001));
        assert_ne!(a[..8], gaussian(43, 8)[..]);
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "mean {mean}, var {var}"
        );
    }
}

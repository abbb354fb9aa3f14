//! Fréchet Inception Distance between two sets of features, as pytorch-fid's
//! [`calculate_frechet_distance`](https://github.com/mseitzer/pytorch-fid/blob/b9d7ca3b6dd1ab19f81d1bc5a4e8ab05c7ab6ad2/src/pytorch_fid/fid_score.py):
//! `|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr(sqrt(S_a S_b))` with the sample covariances
//! (`n - 1` in the denominator), in f64.
//!
//! pytorch-fid takes the square root of `S_a S_b` with scipy's `sqrtm` (a Schur method on
//! the non-symmetric product). Only its trace is needed, and that is the sum of the square
//! roots of the eigenvalues of `S_a S_b`, which are those of a symmetric positive
//! semi-definite matrix: with `A`, `B` the centred features divided by `sqrt(n - 1)`,
//! `S_a S_b = A^T A B^T B` has the non-zero eigenvalues of `C C^T`, `C = A B^T`
//! (`n_a x n_b`), so the trace is the sum of `C`'s singular values. That is exact, costs
//! `n_a n_b d` instead of `d^3` when a set has fewer images than features, and stays
//! accurate where `sqrtm` struggles (rank-deficient covariances). With more images than
//! features on both sides it uses `sqrt(S_a) S_b sqrt(S_a)` (`d x d`) instead.

use nalgebra::{DMatrix, DVector};

use crate::error::{EvalError, Result};

/// Features of one set of images, `n x d`, in f64.
#[derive(Clone, Debug)]
pub struct Features {
    rows: DMatrix<f64>,
}

impl Features {
    /// From `n` feature vectors of equal width.
    pub fn new(rows: &[Vec<f32>]) -> Result<Self> {
        let n = rows.len();
        let d = rows.first().map_or(0, Vec::len);
        if rows.iter().any(|r| r.len() != d) {
            return Err(EvalError::TooFew(
                "feature vectors of different widths".into(),
            ));
        }
        Ok(Self {
            rows: DMatrix::from_fn(n, d, |i, j| rows[i][j] as f64),
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.rows.nrows()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Width of a feature vector.
    pub fn dim(&self) -> usize {
        self.rows.ncols()
    }

    /// Mean, and the centred rows divided by `sqrt(n - 1)` (so that `A^T A` is the sample
    /// covariance).
    fn centred(&self) -> (DVector<f64>, DMatrix<f64>) {
        let n = self.len();
        let mean = self.rows.row_mean().transpose();
        let mut a = self.rows.clone();
        for mut row in a.row_iter_mut() {
            row -= mean.transpose();
        }
        (mean, a / ((n - 1) as f64).sqrt())
    }
}

/// Sum of the square roots of the eigenvalues of a symmetric positive semi-definite
/// matrix. Eigenvalues within rounding of zero (below `n * eps * max`) count as 0: their
/// square roots, `sqrt(eps)` of the largest root each, would otherwise add up (the
/// matrices here are rank-deficient by construction: `n` centred images span `n - 1`
/// dimensions).
fn trace_sqrt(m: DMatrix<f64>) -> f64 {
    let n = m.nrows();
    let eig = m.symmetric_eigenvalues();
    let max = eig.iter().fold(0f64, |a, &l| a.max(l.abs()));
    let floor = max * n as f64 * f64::EPSILON;
    eig.iter().filter(|&&l| l > floor).map(|&l| l.sqrt()).sum()
}

/// The symmetric square root of a symmetric positive semi-definite matrix.
fn sqrt_psd(m: DMatrix<f64>) -> DMatrix<f64> {
    let eig = m.symmetric_eigen();
    let roots = eig.eigenvalues.map(|l| l.max(0.0).sqrt());
    &eig.eigenvectors * DMatrix::from_diagonal(&roots) * eig.eigenvectors.transpose()
}

/// The Fréchet distance between the Gaussians fitted to `a` and `b`.
pub fn frechet_distance(a: &Features, b: &Features) -> Result<f64> {
    if a.len() < 2 || b.len() < 2 {
        return Err(EvalError::TooFew(format!(
            "FID needs at least 2 images on each side (a covariance), got {} and {}",
            a.len(),
            b.len()
        )));
    }
    if a.dim() != b.dim() {
        return Err(EvalError::TooFew(format!(
            "features of width {} and {} cannot be compared",
            a.dim(),
            b.dim()
        )));
    }
    let (mu_a, ca) = a.centred();
    let (mu_b, cb) = b.centred();
    let diff = (&mu_a - &mu_b).norm_squared();
    let (tr_a, tr_b) = (ca.norm_squared(), cb.norm_squared());
    let d = a.dim();
    let tr_covmean = if a.len().min(b.len()) <= d {
        let c = &ca * cb.transpose();
        if c.nrows() <= c.ncols() {
            trace_sqrt(&c * c.transpose())
        } else {
            trace_sqrt(c.transpose() * &c)
        }
    } else {
        let sa = ca.transpose() * &ca;
        let sb = cb.transpose() * &cb;
        let root = sqrt_psd(sa);
        trace_sqrt(&root * sb * &root)
    };
    Ok(diff + tr_a + tr_b - 2.0 * tr_covmean)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(n: usize, d: usize, seed: u64, shift: f32) -> Vec<Vec<f32>> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                (0..d)
                    .map(|_| {
                        s = s
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 + shift
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn both_traces_agree_and_identical_sets_are_at_zero() {
        // 30 images of 6 features: the d x d path and the n x n path give one number.
        let a = Features::new(&features(30, 6, 1, 0.0)).unwrap();
        let b = Features::new(&features(20, 6, 2, 0.3)).unwrap();
        let fast = frechet_distance(&a, &b).unwrap();
        let (_, ca) = a.centred();
        let (_, cb) = b.centred();
        let root = sqrt_psd(ca.transpose() * &ca);
        let slow = trace_sqrt(&root * (cb.transpose() * &cb) * &root);
        let c = &ca * cb.transpose();
        let nuclear = trace_sqrt(&c * c.transpose());
        assert!(
            (slow - nuclear).abs() < 1e-9 * slow.abs().max(1.0),
            "{slow} vs {nuclear}"
        );
        assert!(fast > 0.3 * 0.3 * 6.0 * 0.5, "a shifted set is far: {fast}");
        assert!(frechet_distance(&a, &a).unwrap().abs() < 1e-9);
    }

    #[test]
    fn too_few_images_are_refused() {
        let a = Features::new(&features(1, 4, 1, 0.0)).unwrap();
        let b = Features::new(&features(5, 4, 2, 0.0)).unwrap();
        assert!(matches!(
            frechet_distance(&a, &b),
            Err(EvalError::TooFew(_))
        ));
    }
}

//! The CPU attention kernel (`ditail_models::kernels::attention`, burn-flex f32) against
//! the reference (the mix in tensor ops, then burn's attention), whole tensors: self- and
//! cross-attention, SD1.5's head widths, token counts that are not multiples of the
//! kernel's blocks, and every injection variant.

mod common;

use burn::prelude::*;
use burn::tensor::Distribution;
use ditail::models::QkInjection;
use ditail::models::kernels::attention::{attention, attention_reference, cpu_kernel_launches};

/// Relative tolerance on the largest difference (different summation orders, a polynomial
/// `exp` within 2 ulp).
const TOL: f32 = 1e-5;

#[test]
fn the_cpu_kernel_equals_the_reference() {
    let device = common::cpu();
    let rand =
        |dims: [usize; 3]| Tensor::<3>::random(dims, Distribution::Normal(0.0, 2.0), &device);
    // (batch, query tokens, key tokens, heads, head width, injection)
    let cases = [
        (1, 64, 64, 8, 40, 0),
        (3, 300, 300, 8, 40, 1),
        (3, 257, 257, 2, 16, 2),
        (2, 100, 77, 8, 80, 0),
        (2, 1, 5, 1, 4, 0),
        (2, 129, 129, 4, 12, 3),
        (2, 70, 70, 4, 8, 4),
        // More keys than a tile (512): the running max and sum carried across tiles.
        (1, 37, 1100, 2, 40, 0),
    ];
    for (b, nq, nkv, heads, d, inject) in cases {
        let c = heads * d;
        let (q, k, v) = (rand([b, nq, c]), rand([b, nkv, c]), rand([b, nkv, c]));
        let mask = || Tensor::<1>::random([nq], Distribution::Uniform(0.0, 1.0), &device);
        let source = || (rand([1, nq, c]), rand([1, nq, c]));
        let injection = match inject {
            0 => None,
            1 => Some(QkInjection {
                source: None,
                mask: None,
            }),
            2 => Some(QkInjection {
                source: None,
                mask: Some(mask()),
            }),
            3 => Some(QkInjection {
                source: Some(source()),
                mask: None,
            }),
            _ => Some(QkInjection {
                source: Some(source()),
                mask: Some(mask()),
            }),
        };
        let before = cpu_kernel_launches();
        let got = attention(q.clone(), k.clone(), v.clone(), heads, injection.clone());
        assert_eq!(cpu_kernel_launches(), before + 1, "the CPU kernel ran");
        let want = attention_reference(q, k, v, heads, injection);
        let scale = want.clone().abs().max().into_scalar::<f32>();
        let diff = (got - want).abs().max().into_scalar::<f32>();
        assert!(
            diff <= TOL * scale,
            "batch {b}, {nq}x{nkv} tokens, {heads} heads of {d}, injection {inject}: max |diff| {diff} of {scale}"
        );
    }
}

//! The CPU SiLU kernel (`ditail_models::kernels::silu`, burn-flex f32, in place when the
//! tensor is not shared) against burn's `silu`, whole tensors: a fresh tensor, one whose
//! buffer another tensor still holds (which must stay unchanged), a transposed view and a
//! slice that starts inside its buffer.

mod common;

use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation;
use ditail::models::kernels::silu::silu;

/// Relative tolerance on the largest difference (a polynomial `exp` within 2 ulp).
const TOL: f32 = 1e-6;

#[test]
fn the_cpu_kernel_equals_burns_silu() {
    let device = common::cpu();
    // Wide enough for several of the kernel's tasks, with values where exp over- and
    // underflows.
    let x = Tensor::<4>::random([2, 64, 33, 17], Distribution::Normal(0.0, 30.0), &device);
    let before = x.to_data();
    let want = activation::silu(x.clone());
    let cases = [
        ("shared buffer", silu(x.clone()), want.clone()),
        (
            "transposed",
            silu(x.clone().swap_dims(1, 3)),
            want.clone().swap_dims(1, 3),
        ),
        (
            "offset slice",
            silu(x.clone().slice([1..2, 3..40])),
            want.clone().slice([1..2, 3..40]),
        ),
        ("fresh", silu(x.clone() * 1.0), want),
    ];
    for (what, got, want) in cases {
        common::assert_close(what, &got.to_data(), &want.to_data(), TOL);
    }
    assert_eq!(x.to_data(), before, "the input tensor was changed");
}

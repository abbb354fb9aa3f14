//! The CPU GEGLU kernel (`ditail_models::kernels::geglu`, burn-flex f32) against burn's ops
//! (`chunk`, `gelu`, product), whole tensors: a fresh tensor, a transposed view and a slice
//! that starts inside its buffer.

mod common;

use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation;
use ditail::models::kernels::geglu::geglu;

/// Relative tolerance on the largest difference (the kernel's GELU is within 8 ulp of exact
/// GELU, burn's within ~2).
const TOL: f32 = 1e-6;

fn burns(x: Tensor<3>) -> Tensor<3> {
    let [hidden, gate] = <[Tensor<3>; 2]>::try_from(x.chunk(2, 2)).unwrap();
    hidden * activation::gelu(gate)
}

#[test]
fn the_cpu_kernel_equals_burns_geglu() {
    let device = common::cpu();
    // Rows enough for several of the kernel's tasks, values out to both tails, a half-width
    // (37) that is not a multiple of any vector width.
    let x = Tensor::<3>::random([2, 300, 74], Distribution::Normal(0.0, 4.0), &device);
    let cases = [
        ("fresh", x.clone()),
        ("transposed", x.clone().swap_dims(1, 2)),
        (
            "offset slice",
            x.clone().slice([0..2, 0..300, 0..74]).slice([1..2, 7..250]),
        ),
        (
            "non-contiguous",
            Tensor::cat(vec![x.clone(), x.clone()], 0)
                .swap_dims(0, 1)
                .slice([0..300, 1..3])
                .swap_dims(0, 1),
        ),
    ];
    for (what, x) in cases {
        let want = burns(x.clone());
        let got = geglu(x);
        assert_eq!(got.dims(), want.dims(), "{what}");
        common::assert_close(what, &got.to_data(), &want.to_data(), TOL);
    }
}

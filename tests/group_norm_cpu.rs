//! The CPU GroupNorm kernel (`ditail_models::kernels::group_norm`, burn-flex f32, SiLU fused
//! or not) against burn's `GroupNorm` (and `silu`), whole tensors: a fresh 4-D tensor with
//! an offset per channel, a slice that starts inside its buffer, a transposed
//! (non-contiguous) view, and a 3-D one; and the f16 path (burn's ops) against burn's module.

mod common;

use burn::nn::GroupNormConfig;
use burn::prelude::*;
use burn::tensor::activation;
use burn::tensor::{DType, Distribution};
use ditail::models::kernels::group_norm::group_norm;

/// Relative tolerance on the largest difference (statistics in f64 here, f32 in burn).
const TOL: f32 = 1e-5;
/// The same for f16 (both sides round the affine in f16: a few of its ulp).
const TOL_F16: f32 = 2e-3;

#[test]
fn the_cpu_kernel_equals_burns_group_norm() {
    let device = common::cpu();
    let mut norm = GroupNormConfig::new(8, 48).with_epsilon(1e-6).init(&device);
    // Non-trivial affine parameters.
    let gamma = Tensor::<1>::random([48], Distribution::Normal(1.0, 0.5), &device);
    let beta = Tensor::<1>::random([48], Distribution::Normal(0.0, 0.5), &device);
    norm.gamma = Some(burn::module::Param::from_tensor(gamma));
    norm.beta = Some(burn::module::Param::from_tensor(beta));
    // Channels with their own offset and spread, so that each group's statistics matter.
    let offsets = Tensor::<1>::random([48], Distribution::Normal(0.0, 10.0), &device);
    let x = Tensor::<4>::random([2, 48, 13, 11], Distribution::Normal(0.0, 3.0), &device)
        + offsets.reshape([1, 48, 1, 1]);
    let cases = [
        ("fresh", x.clone()),
        ("offset slice", x.clone().slice([1..2, 0..48])),
        ("non-contiguous", x.clone().swap_dims(2, 3)),
    ];
    for (what, x) in cases {
        let want = norm.forward(x.clone());
        for silu in [false, true] {
            let want = if silu {
                activation::silu(want.clone())
            } else {
                want.clone()
            };
            let got = group_norm(&norm, x.clone(), silu);
            common::assert_close(
                &format!("{what}, silu {silu}"),
                &got.to_data(),
                &want.to_data(),
                TOL,
            );
        }
    }
    // f16 (not the kernel's: burn's ops, the statistics widened to f32 as burn's module
    // does), against burn's module on the same f16 values.
    let half = |t: Tensor<1>| burn::module::Param::from_tensor(t.cast(DType::F16));
    let mut norm16 = norm.clone();
    norm16.gamma = norm.gamma.as_ref().map(|g| half(g.val()));
    norm16.beta = norm.beta.as_ref().map(|b| half(b.val()));
    let x16 = x.clone().cast(DType::F16);
    common::assert_close(
        "f16",
        &group_norm(&norm16, x16.clone(), false).to_data(),
        &norm16.forward(x16).to_data(),
        TOL_F16,
    );
    // 3-D (the transformer's `[batch, channels, tokens]` never reaches it, but the op
    // takes any rank from 3).
    let x3 = Tensor::<3>::random([3, 48, 40], Distribution::Normal(2.0, 1.0), &device);
    common::assert_close(
        "3-D",
        &group_norm(&norm, x3.clone(), false).to_data(),
        &norm.forward(x3).to_data(),
        TOL,
    );
}

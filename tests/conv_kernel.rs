//! The CPU convolution kernels (`ditail_models::kernels::conv`: direct, and Winograd
//! F(2x2, 3x3) and F(4x4, 3x3) for 3x3 stride-1 layers of 16x16 and more) against burn's own convolution,
//! whole tensors, on every geometry the U-Net and VAE use (3x3 stride 1 and 2
//! with symmetric padding, the VAE's stride-2 downsample with padding on the bottom and
//! right only) and some they do not (odd sizes, 5x3 kernels, batch 3, images narrower than
//! the kernel's reach, a single output channel slice and many, several small images in one
//! product).

mod common;

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2dConfig;
use burn::prelude::*;
use burn::tensor::Distribution;
use ditail::models::kernels::conv::{
    conv2d, conv2d_reference, kernel_launches, winograd, winograd_enabled,
};
use ditail::models::kernels::product;

/// Fails unless the largest difference is within `tol` of the largest value.
fn assert_close(what: &str, got: Tensor<4>, want: Tensor<4>, tol: f32) {
    let scale = want.clone().abs().max().into_scalar::<f32>().max(1e-6);
    let diff = (got - want).abs().max().into_scalar::<f32>();
    assert!(diff / scale <= tol, "{what}: max |diff| {diff} of {scale}");
}

/// Relative tolerance on the largest difference for the direct kernel and F(2x2, 3x3):
/// they sum in another order than burn.
const TOL: f32 = 1e-5;
/// For F(4x4, 3x3): its transforms scale values by up to 8 and 1/24 before the products
/// are summed, which costs about a digit (measured 1.3e-5 at 512 input channels).
const TOL_F4: f32 = 5e-5;

/// The tolerance for a convolution the default rule may send to F(4x4, 3x3).
fn tol_for(out: [usize; 2]) -> f32 {
    if out.iter().all(|&s| s >= 16) {
        TOL_F4
    } else {
        TOL
    }
}

#[test]
fn the_cpu_kernel_equals_burns_convolution() {
    let device = common::cpu();
    // (batch, in, out, h, w, kernel, stride, padding (top, left, bottom, right))
    type Case = (
        usize,
        usize,
        usize,
        usize,
        usize,
        [usize; 2],
        [usize; 2],
        Padding,
    );
    type Padding = (usize, usize, usize, usize);
    let cases: &[Case] = &[
        (1, 4, 8, 16, 16, [3, 3], [1, 1], (1, 1, 1, 1)),
        (3, 8, 16, 8, 8, [3, 3], [1, 1], (1, 1, 1, 1)),
        (1, 16, 320, 4, 4, [3, 3], [1, 1], (1, 1, 1, 1)),
        (2, 8, 8, 17, 9, [3, 3], [2, 2], (1, 1, 1, 1)),
        (1, 8, 12, 16, 16, [3, 3], [2, 2], (0, 0, 1, 1)),
        (1, 3, 5, 7, 11, [5, 3], [1, 2], (2, 1, 2, 1)),
        (2, 4, 6, 2, 3, [3, 3], [1, 1], (1, 1, 1, 1)),
        (1, 4, 4, 40, 70, [3, 3], [1, 1], (1, 1, 1, 1)),
        (1, 4, 4, 6, 6, [3, 3], [1, 1], (0, 0, 0, 0)),
        // Winograd (3x3 stride 1, outputs of 16 and more a side): odd sides (partial tiles,
        // a partial panel of tiles, one sub-block of both images' tiles), F(2x2, 3x3) (20
        // F(4x4) tiles), no padding, several blocks of output channels.
        (2, 8, 8, 17, 19, [3, 3], [1, 1], (1, 1, 1, 1)),
        (1, 8, 16, 20, 18, [3, 3], [1, 1], (0, 0, 0, 0)),
        (1, 96, 64, 32, 32, [3, 3], [1, 1], (1, 1, 1, 1)),
        // The VAE decoder's widest layers: F(4x4, 3x3) sums 512·9 rounded terms.
        (1, 512, 16, 32, 32, [3, 3], [1, 1], (1, 1, 1, 1)),
        // F(4x4, 3x3) at 64x64: chunks of several sub-blocks, the last chunk shorter.
        (2, 256, 8, 64, 64, [3, 3], [1, 1], (1, 1, 1, 1)),
        // A chunk per sub-block (600 channels' transformed tiles), sub-blocks of 12 tile
        // rows across the two images' 10 each.
        (2, 600, 20, 40, 40, [3, 3], [1, 1], (1, 1, 1, 1)),
        // 1x1 (the kernel's on CPUs with AVX-512): tiles of positions across rows, output
        // channels off the 12-row strips, one image split into channel slices.
        (2, 40, 27, 9, 30, [1, 1], [1, 1], (0, 0, 0, 0)),
        (1, 96, 200, 8, 8, [1, 1], [1, 1], (0, 0, 0, 0)),
        // Several small images multiplied together (on CPUs with AVX-512): more images
        // than one product takes (4 of 8x8), channel slices off the 12-row strips, 1x1.
        (5, 16, 30, 8, 8, [3, 3], [1, 1], (1, 1, 1, 1)),
        (3, 64, 200, 4, 4, [3, 3], [1, 1], (1, 1, 1, 1)),
        (3, 96, 200, 8, 8, [1, 1], [1, 1], (0, 0, 0, 0)),
    ];
    for &(batch, cin, cout, h, w, kernel, stride, (t, l, b, r)) in cases {
        let conv = Conv2dConfig::new([cin, cout], kernel)
            .with_stride(stride)
            .with_padding(PaddingConfig2d::Explicit(t, l, b, r))
            .init(&device);
        let x = Tensor::<4>::random([batch, cin, h, w], Distribution::Normal(0.0, 1.0), &device);
        let before = kernel_launches();
        let got = conv2d(&conv, x.clone());
        if kernel == [1, 1] && !product::wide() {
            continue; // burn's (checked below)
        }
        let [_, _, oh, ow] = got.dims();
        // 3x3 stride 1, 16 outputs a side, 256 output positions over the batch, 8 channels.
        let eligible = kernel == [3, 3]
            && stride == [1, 1]
            && oh.min(ow) >= 16
            && batch * oh * ow >= 256
            && cin >= 8;
        let winograd = eligible && winograd_enabled();
        assert_eq!(
            kernel_launches(),
            (before.0 + 1, before.1 + usize::from(winograd)),
            "the kernel ran (Winograd: {winograd})"
        );
        // A batch's images come out as each image alone, bit for bit (the pipeline
        // compares runs whose batches differ), Winograd aside (its tiles span the batch).
        if batch > 1 && !winograd {
            let alone = (0..batch)
                .map(|i| conv2d(&conv, x.clone().narrow(0, i, 1)))
                .collect::<Vec<_>>();
            let alone = Tensor::cat(alone, 0);
            assert_eq!(
                alone.into_data(),
                got.clone().into_data(),
                "batch {batch}, {cin}->{cout}, {h}x{w}: the images alone"
            );
        }
        let want = conv2d_reference(&conv, x.clone());
        assert_eq!(got.dims(), want.dims());
        let what = format!(
            "batch {batch}, {cin}->{cout}, {h}x{w}, kernel {kernel:?}, stride {stride:?}, \
             padding {:?}",
            (t, l, b, r)
        );
        assert_close(&what, got, want.clone(), tol_for([oh, ow]));
        // Winograd F(2x2, 3x3) itself (off by default), on every 3x3 stride-1 case.
        if kernel == [3, 3] && stride == [1, 1] {
            let values = |t: Tensor<4>| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
            let bias = conv.bias.as_ref().unwrap().val();
            let shape = winograd::Shape {
                n: batch,
                c: cin,
                h,
                w,
                o: cout,
                top: t,
                left: l,
                oh,
                ow,
            };
            let (x, weight) = (values(x), values(conv.weight.val()));
            let bias = bias.into_data().try_to_vec::<f32>().unwrap();
            for tile in [winograd::Tile::F2, winograd::Tile::F4] {
                let out = winograd::conv3x3(&x, &weight, &bias, &shape, tile);
                let out =
                    Tensor::<4>::from_data(TensorData::new(out, [batch, cout, oh, ow]), &device);
                let tol = match tile {
                    winograd::Tile::F2 => TOL,
                    winograd::Tile::F4 => TOL_F4,
                };
                assert_close(
                    &format!("Winograd {tile:?}, {what}"),
                    out,
                    want.clone(),
                    tol,
                );
            }
        }
    }
    one_by_one_convolutions_stay_with_burn();
}

/// Run by the test above: the launch counter is process-wide, so the two must not run at
/// once.
fn one_by_one_convolutions_stay_with_burn() {
    let device = common::cpu();
    let conv = Conv2dConfig::new([4, 8], [1, 1]).init(&device);
    let x = Tensor::<4>::random([1, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
    let before = kernel_launches();
    let got = conv2d(&conv, x.clone());
    assert_eq!(
        kernel_launches().0,
        before.0 + usize::from(product::wide()),
        "1x1 goes to burn-flex's own GEMM path unless the products run at 512 bits"
    );
    got.into_data().assert_approx_eq::<f32>(
        &conv.forward(x).into_data(),
        burn::tensor::Tolerance::default(),
    );
}

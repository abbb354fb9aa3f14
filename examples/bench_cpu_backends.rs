//! Compares the CPU backends burn offers on the operations that dominate SD1.5: a 3x3
//! convolution 320->320 at 64x64, a U-Net-sized matmul, and the accuracy of a large f32 sum
//! (GroupNorm statistics at 512 px sum millions of values).
//!
//! ```text
//! cargo run --release --features ndarray --example bench_cpu_backends
//! ```
//! Prints the median of 5 runs after one warm-up, in GFLOP/s, for burn-flex and, when the
//! `ndarray` feature is on, burn-ndarray.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;

fn median_secs(mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[2]
}

fn bench(name: &str, device: &Device) {
    let x = Tensor::<4>::random(
        [1, 320, 64, 64],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        device,
    );
    let w = Tensor::<4>::random(
        [320, 320, 3, 3],
        burn::tensor::Distribution::Normal(0.0, 0.05),
        device,
    );
    let conv = median_secs(|| {
        let y = conv2d(
            x.clone(),
            w.clone(),
            None,
            ConvOptions::new([1, 1], [1, 1], [1, 1], 1),
        );
        let _ = y.into_data();
    });
    let conv_flops = 2.0 * 320.0 * 320.0 * 9.0 * 64.0 * 64.0;

    let a = Tensor::<2>::random(
        [4096, 320],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        device,
    );
    let b = Tensor::<2>::random(
        [320, 1280],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        device,
    );
    let mm = median_secs(|| {
        let _ = a.clone().matmul(b.clone()).into_data();
    });
    let mm_flops = 2.0 * 4096.0 * 320.0 * 1280.0;

    let n = 16_777_216usize;
    let ones = Tensor::<1>::ones([n], device) * 0.1;
    let sum = ones.sum().into_scalar::<f32>();
    let exact = 0.1f64 * n as f64;

    println!(
        "{name:>8}: conv3x3 320->320 @64x64 {:6.1} GFLOP/s | matmul 4096x320x1280 {:6.1} GFLOP/s | sum of 2^24 x 0.1: rel err {:.1e}",
        conv_flops / conv / 1e9,
        mm_flops / mm / 1e9,
        ((sum as f64 - exact) / exact).abs()
    );
}

fn main() {
    println!(
        "threads: {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    #[cfg(feature = "flex")]
    bench("flex", &Device::flex());
    #[cfg(feature = "ndarray")]
    bench("ndarray", &Device::ndarray());
}

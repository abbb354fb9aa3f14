//! The Winograd convolutions on the U-Net's and the VAE's 3x3 layers, on rayon's pool
//! (`RAYON_NUM_THREADS`): milliseconds per call and GMAC/s counted at the direct
//! convolution's multiply-adds, for F(2x2, 3x3), F(4x4, 3x3) and the convolution kernel as
//! the networks call it (with `DITAIL_CONV=direct` in the environment: the direct kernel).
//! For comparing builds (copy the binary, alternate) and the rules in `conv/flex.rs`.
//!
//! `cargo run --release -p ditail-kernels --features flex --example bench_winograd [-- runs [layer,...]]`

use std::time::Instant;

use burn::backend::Flex;
use burn::backend::ops::FloatTensorOps;
use burn::tensor::TensorData;
use ditail_kernels::conv::flex;
use ditail_kernels::conv::winograd::{Shape, Tile, conv3x3};

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    // Optional: the indexes of the layers to run (a comma list), all by default.
    let only: Option<Vec<usize>> = std::env::args()
        .nth(2)
        .map(|list| list.split(',').filter_map(|i| i.parse().ok()).collect());
    // (batch, in, out, side): SD1.5's U-Net at 64x64 and 32x32 latents, its VAE decoder
    // to 256 px.
    let layers: &[[usize; 4]] = &[
        [3, 320, 320, 64],
        [3, 960, 320, 64],
        [1, 320, 320, 64],
        [3, 640, 640, 32],
        [1, 640, 640, 32],
        [3, 1280, 1280, 16],
        [3, 2560, 1280, 16],
        [1, 1280, 1280, 16],
        [3, 1280, 1280, 8],
        [1, 1280, 1280, 8],
        [1, 512, 512, 64],
        [1, 256, 256, 128],
        [1, 128, 128, 256],
        [1, 128, 3, 256],
    ];
    println!(
        "batch x in -> out @ side    F(2x2) ms (GMAC/s)    F(4x4) ms (GMAC/s)    conv2d ms (GMAC/s)"
    );
    for (index, &[n, c, o, side]) in layers.iter().enumerate() {
        if only.as_ref().is_some_and(|only| !only.contains(&index)) {
            continue;
        }
        let x: Vec<f32> = (0..n * c * side * side)
            .map(|i| ((i % 13) as f32 - 6.0) * 0.1)
            .collect();
        let weights: Vec<f32> = (0..o * c * 9)
            .map(|i| ((i % 11) as f32 - 5.0) * 0.01)
            .collect();
        let bias = vec![0.5f32; o];
        let shape = Shape {
            n,
            c,
            h: side,
            w: side,
            o,
            top: 1,
            left: 1,
            oh: side,
            ow: side,
        };
        let macs = (n * c * o * side * side * 9) as f64;
        let mut line = format!("{n} x {c:>4} -> {o:>4} @ {side:>3}");
        let tensor = |values: &[f32], shape: Vec<usize>| {
            Flex::float_from_data(TensorData::new(values.to_vec(), shape), &Default::default())
        };
        let (xt, wt, bt) = (
            tensor(&x, vec![n, c, side, side]),
            tensor(&weights, vec![o, c, 3, 3]),
            tensor(&bias, vec![o]),
        );
        let kernel = || {
            flex::conv2d(xt.clone(), wt.clone(), bt.clone(), [1, 1], [1, 1, 1, 1]);
        };
        let f2 = || {
            conv3x3(&x, &weights, &bias, &shape, Tile::F2);
        };
        let f4 = || {
            conv3x3(&x, &weights, &bias, &shape, Tile::F4);
        };
        let ways: [&dyn Fn(); 3] = [&f2, &f4, &kernel];
        for way in ways {
            way();
            let mut times: Vec<f64> = (0..runs)
                .map(|_| {
                    let t = Instant::now();
                    way();
                    t.elapsed().as_secs_f64()
                })
                .collect();
            times.sort_by(f64::total_cmp);
            let median = times[runs / 2];
            line += &format!("    {:8.1} ({:5.1})", median * 1e3, macs / median / 1e9);
        }
        println!("{line}");
    }
}

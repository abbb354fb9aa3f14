//! The linear layers' GEMM ([`sgemm512::sgemm`], AVX-512) on SD1.5's U-Net shapes at 32x32
//! latents, batch 1 and 3 (`tokens x in x out`), on rayon's pool (`RAYON_NUM_THREADS`):
//! milliseconds per call and GFLOP/s. For comparing builds (copy the binary, alternate).
//!
//! `cargo run --release -p ditail-kernels --features flex --example bench_linear [-- runs]`

use std::time::Instant;

use ditail_kernels::sgemm512;

fn main() {
    if !sgemm512::available() {
        eprintln!("no AVX-512 on this CPU");
        return;
    }
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    // Per transformer level (tokens at batch 1, channels): attention's projections, the
    // feed-forward's GEGLU projection and output, cross-attention's keys/values (77 text
    // tokens per image).
    let mut shapes = Vec::new();
    for batch in [1, 3] {
        for (tokens, ch) in [(1024, 320), (256, 640), (64, 1280)] {
            let m = batch * tokens;
            shapes.extend([
                [m, ch, ch],
                [m, ch, 8 * ch],
                [m, 4 * ch, ch],
                [77 * batch, 768, ch],
            ]);
        }
    }
    println!("m x k x n               ms      GFLOP/s");
    for [m, k, n] in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let bias: Vec<f32> = (0..n).map(|i| i as f32).collect();
        std::hint::black_box(sgemm512::sgemm([m, k, n], &a, &b, Some(&bias)));
        let mut times: Vec<f64> = (0..runs)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(sgemm512::sgemm([m, k, n], &a, &b, Some(&bias)));
                t.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let median = times[runs / 2];
        let flops = 2.0 * (m * k * n) as f64;
        println!(
            "{m:>5} x {k:>5} x {n:>5}  {:8.2}  {:7.1}",
            median * 1e3,
            flops / median / 1e9
        );
    }
}

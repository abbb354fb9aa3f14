//! This CPU's peak f32 FMA throughput, the ceiling every CPU kernel is measured against
//! (issue 14: "this CPU's real FMA peak from a microbenchmark").
//!
//! Each thread runs 12 independent chains of 256-bit FMAs (enough to cover the FMA units'
//! latency x throughput on AVX2 cores: 4-5 cycles x 2 ports), entirely in registers, so the
//! figure is the arithmetic peak without memory traffic; then, where the CPU has AVX-512,
//! the same with 512-bit FMAs.
//!
//! ```sh
//! cargo run --example fma_peak            # all cores (the dev profile is enough: intrinsics)
//! cargo run --example fma_peak -- 1       # one thread
//! ```

use std::time::Instant;

/// FMAs per chain per iteration, and chains.
const CHAINS: usize = 12;
const ITERS: u64 = 200_000_000;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn chains(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm256_set1_ps(0.999_999);
    let b = _mm256_set1_ps(1e-7);
    let mut acc = [_mm256_set1_ps(1.0); CHAINS];
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm256_fmadd_ps(*x, a, b);
        }
    }
    let mut sum = _mm256_setzero_ps();
    for x in acc {
        sum = _mm256_add_ps(sum, x);
    }
    let mut out = [0f32; 8];
    // SAFETY: `out` holds the 8 floats stored (unaligned store).
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sum) };
    out.iter().sum()
}

/// The same with 512-bit FMAs (16 lanes), where the CPU has AVX-512: PyTorch's kernels use
/// them, the `gemm` crate's stable build does not.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn chains512(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm512_set1_ps(0.999_999);
    let b = _mm512_set1_ps(1e-7);
    let mut acc = [_mm512_set1_ps(1.0); CHAINS];
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm512_fmadd_ps(*x, a, b);
        }
    }
    let mut sum = _mm512_setzero_ps();
    for x in acc {
        sum = _mm512_add_ps(sum, x);
    }
    _mm512_reduce_add_ps(sum)
}

/// GFLOP/s of one thread running `iters` iterations of 512-bit FMAs; `None` without
/// AVX-512.
fn run512(iters: u64) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        let start = Instant::now();
        // SAFETY: the feature was detected.
        let sink = unsafe { chains512(iters) };
        let secs = start.elapsed().as_secs_f64();
        std::hint::black_box(sink);
        return Some((iters * CHAINS as u64 * 16 * 2) as f64 / secs / 1e9);
    }
    let _ = iters;
    None
}

/// GFLOP/s of one thread running `iters` iterations (2 FLOPs x 8 lanes per FMA).
fn run(iters: u64) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        let start = Instant::now();
        // SAFETY: the features were detected.
        let sink = unsafe { chains(iters) };
        let secs = start.elapsed().as_secs_f64();
        std::hint::black_box(sink);
        return (iters * CHAINS as u64 * 8 * 2) as f64 / secs / 1e9;
    }
    let _ = iters;
    f64::NAN
}

fn main() {
    let threads: usize = std::env::args().nth(1).map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |t| t.parse().expect("a thread count"),
    );
    if run(1000).is_nan() {
        eprintln!("fma_peak: needs an x86-64 CPU with AVX2 and FMA");
        std::process::exit(1);
    }
    run(ITERS / 10); // warm up: clocks settle
    let per: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(|| run(ITERS))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total: f64 = per.iter().sum();
    println!(
        "f32 FMA peak: {total:.1} GFLOP/s on {threads} threads ({:.1} per thread; AVX2, {CHAINS} chains of 8-lane FMAs)",
        total / threads as f64
    );
    if run512(1000).is_some() {
        let per: Vec<f64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(|| run512(ITERS))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().unwrap_or(0.0))
                .collect()
        });
        let total: f64 = per.iter().sum();
        println!(
            "f32 FMA peak: {total:.1} GFLOP/s on {threads} threads ({:.1} per thread; AVX-512, {CHAINS} chains of 16-lane FMAs)",
            total / threads as f64
        );
    }
}

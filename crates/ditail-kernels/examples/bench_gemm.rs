//! The convolutions' products on one thread: the `gemm` crate (what the kernels used on
//! every CPU) against [`sgemm512::single`] (AVX-512, the weights read in place), GFLOP/s on the
//! U-Net's and the VAE's shapes (`m x k x n`: output channels x in·kh·kw (or in, for
//! Winograd) x output positions of a tile).
//!
//! `cargo run --release -p ditail-kernels --features flex --example bench_gemm`

use std::time::Instant;

use ditail_kernels::sgemm512;

fn main() {
    if !sgemm512::available() {
        eprintln!("no AVX-512 on this CPU");
        return;
    }
    let shapes: &[[usize; 3]] = &[
        [320, 2880, 256],
        [640, 5760, 256],
        [1280, 11520, 64],
        [320, 320, 256],
        [640, 640, 144],
        [1280, 1280, 64],
        [512, 512, 256],
        [256, 256, 256],
        [128, 1152, 256],
    ];
    println!("m x k x n            gemm crate   sgemm512::single (GFLOP/s, one thread)");
    for &[m, k, n] in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut c = vec![0f32; m * n];
        let flops = 2.0 * (m * k * n) as f64;
        let reps = (4e9 / flops).ceil() as usize;
        let time = |f: &mut dyn FnMut()| {
            f();
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            flops * reps as f64 / t.elapsed().as_secs_f64() / 1e9
        };
        // SAFETY: the buffers above hold the sizes passed, and the kernel's CPU features were checked.
        let crate_rate = time(&mut || unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                k as isize,
                b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        });
        // SAFETY: the buffers above hold the sizes passed, and the kernel's CPU features were checked.
        let ours = time(&mut || unsafe {
            sgemm512::single::gemm(
                &a,
                k,
                [m, k, n],
                sgemm512::single::Right::Strided(b.as_ptr(), [n, 1]),
                c.as_mut_ptr(),
                n,
                sgemm512::single::Start::Bias(None),
            )
        });
        println!("{m:>5} x {k:>5} x {n:>4}   {crate_rate:>8.1}   {ours:>8.1}");
    }
}

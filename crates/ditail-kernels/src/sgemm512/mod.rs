//! An f32 GEMM in 512-bit AVX-512 instructions for the linear layers: `C = A B + bias`,
//! all row-major (`A` `[m, k]`, `B` `[k, n]` as burn stores a `Linear`'s weight, `C`
//! `[m, n]`).
//!
//! Why (issue 14, BENCHMARKS.md): on CPUs with AVX-512 PyTorch's oneDNN/MKL run the linear
//! layers with 512-bit FMAs (351 GFLOP/s peak on 2 Xeon cores against 179 for 256-bit
//! ones), while the `gemm` crate under burn-flex's matmul uses its 256-bit kernel on stable
//! Rust. SDXL's U-Net is ~75% linear layers.
//!
//! Blocking (Goto/BLIS): the columns are split into blocks of [`NC`] (and the rows into
//! strips when there are too few column blocks for the threads), one task each, run in
//! parallel; each task is [`single::gemm`]: it packs its block of `B`, [`KC`] rows at a
//! time, into panels of [`NR`] columns laid out `[kc][NR]` (zero-padded at the right edge),
//! then multiplies every [`MR`]-row strip of `A` (read in place, one broadcast per element)
//! by every panel with a register-blocked microkernel: 12 x 32 accumulators in 24 zmm
//! registers, two panel loads and 12 broadcasts per `k`.
//!
//! [`single::gemm`] also runs alone inside the tasks of the other CPU kernels (the
//! convolutions' products, attention's `Q Kᵀ` and `P V`), through [`super::product`].

pub mod single;

use std::arch::x86_64::*;

use rayon::prelude::*;

use crate::out_ptr::OutPtr;

/// Rows of a microkernel tile.
pub const MR: usize = 12;
/// Columns of a microkernel tile (two zmm registers).
pub const NR: usize = 32;
/// Rows of `B` packed at a time: a panel slice (`KC x NR` f32, 32 KiB) stays in L1/L2.
pub const KC: usize = 256;
/// Columns of `B` one task owns; half of it for short products (at most [`SHORT_M`] rows),
/// where more, narrower tasks keep the threads busy (measured on 2 AVX-512 cores: 64 x 1280
/// x 1280 at 152 GFLOP/s instead of 115; long products lose ~5% with the narrow blocks).
pub const NC: usize = 256;
/// See [`NC`].
pub const SHORT_M: usize = 256;

/// One row of a packed panel: the `w <= NR` values of `src`, then zeros. A whole row is a
/// copy of a length known at compile time, which the compiler turns into two vector moves:
/// `copy_from_slice` of a run-time length calls `memmove` (12% of an SDXL U-Net step in
/// `perf`, 7% of SD1.5's at 64x64 latents, most of it these 128-byte rows).
#[inline(always)]
pub(crate) fn pack_row(row: &mut [f32], src: &[f32]) {
    let w = src.len();
    if w == NR {
        row[..NR].copy_from_slice(&src[..NR]);
    } else {
        row[..w].copy_from_slice(src);
        row[w..NR].fill(0.0);
    }
}

/// Whether this CPU runs the kernel.
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// `a b + bias` (bias broadcast over rows; zero when `None`), `[m, n]` row-major.
///
/// The result is a new buffer that the tasks write once, not zeroed first (zeroing a linear
/// layer's output, up to 126 MB for SD1.5's feed-forward at 64x64 latents and batch 3, was
/// part of the 2-3% `memset` in `perf`).
///
/// # Panics
/// If the slices are shorter than the shapes say, or the CPU lacks AVX-512 (check
/// [`available`]).
pub fn sgemm([m, k, n]: [usize; 3], a: &[f32], b: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    assert!(available(), "sgemm512 needs AVX-512");
    assert!(a.len() >= m * k && b.len() >= k * n);
    assert!(bias.is_none_or(|b| b.len() >= n));
    if k == 0 {
        // No products: every row is the bias (the tasks below would write nothing).
        return (0..m)
            .flat_map(|_| (0..n).map(|j| bias.map_or(0.0, |b| b[j])))
            .collect();
    }
    let mut c = Vec::with_capacity(m * n);
    if m == 0 || n == 0 {
        return c;
    }
    let out = OutPtr::spare(&mut c);
    // Tasks: blocks of columns, and of rows when there are too few column blocks to keep
    // every thread busy (a 1280-wide layer has 5 blocks; 2 threads would idle 1 in 5).
    let threads = rayon::current_num_threads();
    let nc = if m <= SHORT_M { NC / 2 } else { NC };
    let col_blocks = n.div_ceil(nc);
    let row_parts = (4 * threads)
        .div_ceil(col_blocks)
        .min(m.div_ceil(4 * MR))
        .max(1);
    let rows_per = m.div_ceil(row_parts).next_multiple_of(MR);
    let row_blocks = m.div_ceil(rows_per);
    (0..col_blocks * row_blocks).into_par_iter().for_each(|t| {
        let (jb, ib) = (t % col_blocks, t / col_blocks);
        let (j0, j1) = (jb * nc, ((jb + 1) * nc).min(n));
        let (i0, i1) = (ib * rows_per, ((ib + 1) * rows_per).min(m));
        // SAFETY: AVX-512 checked above; the task writes only rows i0..i1 and columns
        // j0..j1 of `c` (rows of stride n), disjoint from every other task's; the shapes
        // were checked.
        unsafe {
            single::gemm(
                &a[i0 * k..],
                k,
                [i1 - i0, k, j1 - j0],
                single::Right::Strided(b[j0..].as_ptr(), [n, 1]),
                out.get().add(i0 * n + j0),
                n,
                single::Start::Bias(bias.map(|b| &b[j0..j1])),
            )
        };
    });
    // SAFETY: the tasks' blocks cover every row and column, and `single::gemm` with a bias
    // start writes every value of its block.
    unsafe { c.set_len(m * n) };
    c
}

/// The 12 x 32 microkernel: `C (+)= A[12 x kc] P[kc x 32]`; with `first`, `C` starts as the
/// bias (or zero) instead of its stored value. `A` is read in place (row `r` at `a + r·lda`)
/// or, with `PACKED`, from a strip packed `[kc][MR]` (`lda` unused), where the 12 values
/// of each `k` are one cache line and a half instead of 12 streams.
///
/// With `HALF`, a 12 x 16 tile: only the panel's first 16 columns are read, and of them
/// only those in `mask` are loaded from and stored to `C` (and the bias); the other half's
/// FMAs are dead code the compiler drops. For outputs 16 or fewer columns wide (attention's
/// `P V` at head widths 40 and 80 leave 8 and 16, SD1.5's 4x4-latent convolutions at batch
/// 1 have 16 pixels), where the full tile computed twice the columns needed.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn micro<const PACKED: bool, const HALF: bool>(
    a: *const f32,
    lda: usize,
    panel: *const f32,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    bias: Option<&[f32]>,
    first: bool,
    mask: __mmask16,
) {
    macro_rules! rows {
        ($m:ident; $($r:literal),*) => { $( $m!($r); )* };
    }
    // SAFETY: (whole body) the caller guarantees MR rows of `a` with kc values at stride
    // lda, kc x NR panel values, and MR rows of NR values of `c` at stride ldc.
    unsafe {
        let (init0, init1) = match bias {
            Some(b) if HALF => (_mm512_maskz_loadu_ps(mask, b.as_ptr()), _mm512_setzero_ps()),
            Some(b) => (
                _mm512_loadu_ps(b.as_ptr()),
                _mm512_loadu_ps(b.as_ptr().add(16)),
            ),
            None => (_mm512_setzero_ps(), _mm512_setzero_ps()),
        };
        let mut acc = [[init0, init1]; MR];
        if !first {
            macro_rules! load {
                ($r:literal) => {
                    if HALF {
                        acc[$r][0] = _mm512_maskz_loadu_ps(mask, c.add($r * ldc));
                    } else {
                        acc[$r][0] = _mm512_loadu_ps(c.add($r * ldc));
                        acc[$r][1] = _mm512_loadu_ps(c.add($r * ldc + 16));
                    }
                };
            }
            rows!(load; 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11);
        }
        let [mut c00, mut c01] = acc[0];
        let [mut c10, mut c11] = acc[1];
        let [mut c20, mut c21] = acc[2];
        let [mut c30, mut c31] = acc[3];
        let [mut c40, mut c41] = acc[4];
        let [mut c50, mut c51] = acc[5];
        let [mut c60, mut c61] = acc[6];
        let [mut c70, mut c71] = acc[7];
        let [mut c80, mut c81] = acc[8];
        let [mut c90, mut c91] = acc[9];
        let [mut ca0, mut ca1] = acc[10];
        let [mut cb0, mut cb1] = acc[11];
        let rows: [*const f32; MR] = std::array::from_fn(|r| a.add(r * lda));
        let mut p = panel;
        for kk in 0..kc {
            let b0 = _mm512_loadu_ps(p);
            let b1 = if HALF {
                _mm512_setzero_ps()
            } else {
                _mm512_loadu_ps(p.add(16))
            };
            p = p.add(NR);
            macro_rules! fma {
                ($r:expr, $x0:ident, $x1:ident) => {
                    let av = if PACKED {
                        _mm512_set1_ps(*a.add(kk * MR + $r))
                    } else {
                        _mm512_set1_ps(*rows[$r].add(kk))
                    };
                    $x0 = _mm512_fmadd_ps(av, b0, $x0);
                    $x1 = _mm512_fmadd_ps(av, b1, $x1);
                };
            }
            fma!(0, c00, c01);
            fma!(1, c10, c11);
            fma!(2, c20, c21);
            fma!(3, c30, c31);
            fma!(4, c40, c41);
            fma!(5, c50, c51);
            fma!(6, c60, c61);
            fma!(7, c70, c71);
            fma!(8, c80, c81);
            fma!(9, c90, c91);
            fma!(10, ca0, ca1);
            fma!(11, cb0, cb1);
        }
        let out = [
            [c00, c01],
            [c10, c11],
            [c20, c21],
            [c30, c31],
            [c40, c41],
            [c50, c51],
            [c60, c61],
            [c70, c71],
            [c80, c81],
            [c90, c91],
            [ca0, ca1],
            [cb0, cb1],
        ];
        for (r, [x0, x1]) in out.into_iter().enumerate() {
            if HALF {
                _mm512_mask_storeu_ps(c.add(r * ldc), mask, x0);
            } else {
                _mm512_storeu_ps(c.add(r * ldc), x0);
                _mm512_storeu_ps(c.add(r * ldc + 16), x1);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Reproducible values in [-0.5, 0.5) (a linear congruential generator).
    pub(crate) fn values(mut seed: u32) -> impl FnMut() -> f32 {
        move || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        }
    }

    fn naive([m, k, n]: [usize; 3], a: &[f32], b: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = bias.map_or(0.0, |b| b[j]) as f64;
                for p in 0..k {
                    s += a[i * k + p] as f64 * b[p * n + j] as f64;
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    #[test]
    fn equals_a_naive_product_on_ragged_shapes() {
        if !available() {
            eprintln!("no AVX-512 here: nothing to test");
            return;
        }
        let mut rnd = values(1);
        for [m, k, n] in [
            [1, 1, 1],
            [3, 0, 5],
            [12, 256, 32],
            [13, 300, 33],
            [77, 513, 300],
            [5, 1000, 700],
            [64, 64, 1000],
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rnd()).collect();
            let bias: Vec<f32> = (0..n).map(|_| rnd()).collect();
            for bias in [None, Some(&bias[..])] {
                let want = naive([m, k, n], &a, &b, bias);
                let got = sgemm([m, k, n], &a, &b, bias);
                let err = got
                    .iter()
                    .zip(&want)
                    .fold(0f32, |e, (g, w)| e.max((g - w).abs()));
                assert!(err <= 1e-4 * (k as f32).sqrt(), "{m}x{k}x{n}: {err}");
            }
        }
    }
}

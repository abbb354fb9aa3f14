//! The 512-bit GEMM on one thread, for the tasks of a kernel that is already parallel (the
//! convolutions run one task per tile of outputs): `C (+)= A B` with `A` row-major and read
//! in place (a convolution's weights, reused by every tile), `B` and `C` strided.
//!
//! Blocking: `k` in slices of [`KC`]; per slice the task packs its `B` rows into panels
//! of [`NR`] columns (`[kc][NR]`, zero-padded at the right edge, at most 512 columns at a
//! time: the L2 cache), then runs every strip of [`MR`] rows of `A` against every panel: a
//! strip's slice (`MR x kc`, 12 KiB) stays in L1 while the panels stream from L2. An
//! operand that several products share can be packed once ([`pack_panels`]).
//! Measured (`examples/bench_gemm.rs`): reading `A` in place is within 5% of packing it
//! into strips first, which would cost a copy of the weights per call.

use std::cell::RefCell;

use super::{KC, MR, NR, micro, pack_row};

/// Columns of the half-width microkernel (one zmm register).
const HALF_NR: usize = NR / 2;

/// Columns of `B` packed at a time (`KC x NC` f32: 512 KiB).
const NC: usize = 512;

thread_local! {
    /// Each worker's packed panels of `B`, reused across calls.
    static PANELS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The right operand of [`gemm()`], `[k, n]`.
#[derive(Clone, Copy)]
pub enum Right {
    /// Value (`i`, `j`) at `ptr + i·rs + j·cs` (`cs = 1`: rows of stride `rs`; `rs = 1`: a
    /// transposed matrix, as the keys of attention's `Q Kᵀ`): packed by the call.
    Strided(*const f32, [usize; 2]),
    /// Already packed by [`pack_panels`] (for an operand that several products share): the
    /// first panel and the distance from one panel to the next (`k·NR` for the whole
    /// operand; more for a window of rows of a taller packed matrix, which starts `row·NR`
    /// into its first panel).
    Panels(*const f32, usize),
}

/// Values [`pack_panels`] writes for a `[k, n]` operand.
pub fn panels_len([k, n]: [usize; 2]) -> usize {
    n.div_ceil(NR) * NR * k
}

/// Packs the `[k, n]` matrix at `b` (strides as [`Right::Strided`]) into `dst`
/// ([`panels_len`] values): panels of [`NR`] columns, each its `k` rows of `NR` values,
/// zero-padded at the right edge.
///
/// # Safety
/// `b` points at a readable `k x n` matrix with those strides.
pub unsafe fn pack_panels(b: *const f32, strides: [usize; 2], [k, n]: [usize; 2], dst: &mut [f32]) {
    for (p, panel) in dst[..panels_len([k, n])]
        .chunks_exact_mut(k * NR)
        .enumerate()
    {
        let c0 = p * NR;
        // SAFETY: the caller's promise.
        unsafe { pack_panel(b, strides, [0, k], [c0, NR.min(n - c0)], panel) };
    }
}

/// Rows `p0..p0 + kc` and columns `c0..c0 + w` of `b` into `panel` (`[kc][NR]`).
///
/// # Safety
/// Those rows and columns of `b` are readable.
unsafe fn pack_panel(
    b: *const f32,
    [rs, cs]: [usize; 2],
    [p0, kc]: [usize; 2],
    [c0, w]: [usize; 2],
    panel: &mut [f32],
) {
    // SAFETY: (both arms) the caller's promise.
    if cs == 1 {
        for (kk, row) in panel.chunks_exact_mut(NR).take(kc).enumerate() {
            // SAFETY: the caller's promise: kc rows of the panel's NR columns are readable from `b` at stride rs.
            pack_row(row, unsafe {
                std::slice::from_raw_parts(b.add((p0 + kk) * rs + c0), w)
            });
        }
    } else {
        // A column of the panel at a time: contiguous reads when rs = 1.
        panel[..kc * NR].fill(0.0);
        for j in 0..w {
            // SAFETY: the caller's promise: column c0 + j (j < w) of the panel is in `b`.
            let col = unsafe { b.add(p0 * rs + (c0 + j) * cs) };
            for kk in 0..kc {
                // SAFETY: row kk < kc of that column, at stride rs: in `b` (the caller's promise).
                panel[kk * NR + j] = unsafe { *col.add(kk * rs) };
            }
        }
    }
}

/// What `c` starts as.
#[derive(Clone, Copy, Debug)]
pub enum Start<'a> {
    /// Its current values (`c += a b`).
    Accumulate,
    /// A bias per column, broadcast over the rows; zero when `None` (`c = a b + bias`).
    Bias(Option<&'a [f32]>),
}

/// `c = start + a b`: `a` `[m, k]` with rows of stride `lda`, `b` `[k, n]`, `c` `[m, n]`
/// with rows of stride `ldc`.
///
/// # Safety
/// The CPU has AVX-512; `b` holds a readable `k x n` matrix (or its panels), `c` points at
/// `m` rows of `n` values at stride `ldc` that nothing else touches during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(
    a: &[f32],
    lda: usize,
    [m, k, n]: [usize; 3],
    b: Right,
    c: *mut f32,
    ldc: usize,
    start: Start,
) {
    assert!(m == 0 || a.len() >= (m - 1) * lda + k);
    let bias = match start {
        Start::Bias(Some(bias)) => {
            assert!(bias.len() >= n);
            Some(bias)
        }
        _ => None,
    };
    PANELS.with_borrow_mut(|panels| {
        let mut j0 = 0;
        while j0 < n {
            let nc = NC.min(n - j0);
            let count = nc.div_ceil(NR);
            if let Right::Strided(..) = b {
                panels.resize(KC * count * NR, 0.0);
            }
            let mut p0 = 0;
            while p0 < k {
                let kc = KC.min(k - p0);
                if let Right::Strided(b, strides) = b {
                    for (p, panel) in panels.chunks_exact_mut(KC * NR).take(count).enumerate() {
                        let c0 = j0 + p * NR;
                        // SAFETY: rows p0..p0 + kc <= k and columns c0.. <= n of `b`.
                        unsafe {
                            pack_panel(b, strides, [p0, kc], [c0, NR.min(j0 + nc - c0)], panel)
                        };
                    }
                }
                // Panel p of this block of columns, from row p0.
                let panel_at = |p: usize| match b {
                    Right::Strided(..) => panels[p * KC * NR..].as_ptr(),
                    // SAFETY: panel j0 / NR + p of the caller's packed operand, row p0 < k.
                    Right::Panels(packed, stride) => unsafe {
                        packed.add((j0 / NR + p) * stride + p0 * NR)
                    },
                };
                let first = p0 == 0 && !matches!(start, Start::Accumulate);
                // Written (zeroed, then filled) only for a partial strip: attention calls
                // this per 12-row strip, where zeroing 12 KiB per call would cost ~5%.
                let mut edge = std::mem::MaybeUninit::<[f32; MR * KC]>::uninit();
                for s in 0..m.div_ceil(MR) {
                    let rows = MR.min(m - s * MR);
                    let strip = if rows == MR {
                        Strip::InPlace(a[s * MR * lda + p0..].as_ptr(), lda)
                    } else {
                        // The last, partial strip: packed here with zero rows below.
                        let edge = edge.write([0f32; MR * KC]);
                        for i in 0..rows {
                            let src = &a[(s * MR + i) * lda + p0..][..kc];
                            for (kk, &v) in src.iter().enumerate() {
                                edge[kk * MR + i] = v;
                            }
                        }
                        Strip::Packed(edge.as_ptr())
                    };
                    for p in 0..count {
                        let c0 = j0 + p * NR;
                        let w = NR.min(j0 + nc - c0);
                        // SAFETY: the tile (s·MR.., c0..) of `c` is inside the caller's
                        // rows and columns; the strip holds MR x kc values and the panel
                        // kc x NR; AVX-512 is the caller's promise.
                        unsafe {
                            tile(
                                strip,
                                panel_at(p),
                                kc,
                                c.add(s * MR * ldc + c0),
                                ldc,
                                [rows, w],
                                bias.map(|b| &b[c0..c0 + w]),
                                first,
                            )
                        };
                    }
                }
                p0 += kc;
            }
            j0 += nc;
        }
    });
}

/// `MR` rows of `a` from the slice's first column.
#[derive(Clone, Copy)]
enum Strip {
    /// Rows of stride `lda`, in place.
    InPlace(*const f32, usize),
    /// `[kc][MR]`.
    Packed(*const f32),
}

/// One `rows x w` tile of `c`: whole tiles in place, edge tiles through a padded copy.
///
/// # Safety
/// As `micro`'s, for the valid `rows x w` part of `c`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn tile(
    strip: Strip,
    panel: *const f32,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    [rows, w]: [usize; 2],
    bias: Option<&[f32]>,
    first: bool,
) {
    // SAFETY: (the closure's calls) the caller's promises; `c` and `ldc` whole tiles.
    let run = |c: *mut f32, ldc: usize, bias: Option<&[f32]>, first: bool| unsafe {
        match strip {
            Strip::InPlace(a, lda) => {
                micro::<false, false>(a, lda, panel, kc, c, ldc, bias, first, !0)
            }
            Strip::Packed(a) => micro::<true, false>(a, 0, panel, kc, c, ldc, bias, first, !0),
        }
    };
    if rows == MR && w == NR {
        run(c, ldc, bias, first);
        return;
    }
    if rows == MR && w <= HALF_NR {
        // A tile at most half a panel wide: the half-width kernel, its columns masked.
        let mask = ((1u32 << w) - 1) as u16;
        // SAFETY: as above; only the tile's `w` columns of `c` and the bias are touched.
        unsafe {
            match strip {
                Strip::InPlace(a, lda) => {
                    micro::<false, true>(a, lda, panel, kc, c, ldc, bias, first, mask)
                }
                Strip::Packed(a) => micro::<true, true>(a, 0, panel, kc, c, ldc, bias, first, mask),
            }
        }
        return;
    }
    // The tile padded: its bias (or zero) on a first slice, else its current values.
    let mut ct = [0f32; MR * NR];
    if first {
        if let Some(bias) = bias {
            for row in ct.chunks_exact_mut(NR) {
                row[..w].copy_from_slice(&bias[..w]);
            }
        }
    } else {
        for r in 0..rows {
            // SAFETY: the tile's valid part.
            let src = unsafe { std::slice::from_raw_parts(c.add(r * ldc), w) };
            ct[r * NR..][..w].copy_from_slice(src);
        }
    }
    run(ct.as_mut_ptr(), NR, None, false);
    for r in 0..rows {
        // SAFETY: the tile's valid part.
        let dst = unsafe { std::slice::from_raw_parts_mut(c.add(r * ldc), w) };
        dst.copy_from_slice(&ct[r * NR..][..w]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_a_naive_product_on_ragged_shapes() {
        if !super::super::available() {
            eprintln!("no AVX-512 here: nothing to test");
            return;
        }
        let mut rnd = super::super::tests::values(7);
        for [m, k, n] in [
            [1, 1, 1],
            [12, 256, 32],
            [13, 300, 33],
            [77, 513, 600],
            [40, 9, 1000],
            // Edges of half a panel or less (the half-width kernel): 32 + 8, 16, 32 + 15.
            [24, 70, 40],
            [36, 300, 16],
            [25, 40, 47],
        ] {
            // Strided operands: a and b have spare columns, c is written into a wider
            // matrix whose other columns must stay as they were.
            let (lda, ldb, ldc) = (k + 3, n + 5, n + 2);
            let a: Vec<f32> = (0..m * lda).map(|_| rnd()).collect();
            let b: Vec<f32> = (0..k * ldb).map(|_| rnd()).collect();
            // c = start + a b with this right operand (c: m rows of stride ldc).
            let run = |b: Right, c: &mut [f32], start: Start| {
                // SAFETY: every operand below holds the shapes above.
                unsafe { gemm(&a, lda, [m, k, n], b, c.as_mut_ptr(), ldc, start) }
            };
            let mut got = vec![f32::NAN; m * ldc];
            run(
                Right::Strided(b.as_ptr(), [ldb, 1]),
                &mut got,
                Start::Bias(None),
            );
            // Accumulating onto the result doubles it.
            let mut twice = got.clone();
            run(
                Right::Strided(b.as_ptr(), [ldb, 1]),
                &mut twice,
                Start::Accumulate,
            );
            // The same b read as the transpose of its transpose (bt is [n, k] row-major:
            // value (i, j) of b at i + j·k).
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * ldb + i / k]).collect();
            let mut transposed = vec![f32::NAN; m * ldc];
            run(
                Right::Strided(bt.as_ptr(), [1, k]),
                &mut transposed,
                Start::Bias(None),
            );
            // And packed beforehand.
            let mut panels = vec![f32::NAN; panels_len([k, n])];
            // SAFETY: b as above.
            unsafe { pack_panels(b.as_ptr(), [ldb, 1], [k, n], &mut panels) };
            let mut prepacked = vec![f32::NAN; m * ldc];
            let packed = Right::Panels(panels.as_ptr(), k * NR);
            run(packed, &mut prepacked, Start::Bias(None));
            for i in 0..m {
                let row = |v: &[f32]| v[i * ldc..][..n].to_vec();
                assert_eq!(row(&transposed), row(&got), "{m}x{k}x{n}: transposed b");
                assert_eq!(row(&prepacked), row(&got), "{m}x{k}x{n}: packed b");
            }
            let mut err = 0f32;
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|p| a[i * lda + p] as f64 * b[p * ldb + j] as f64)
                        .sum();
                    err = err.max((got[i * ldc + j] - want as f32).abs());
                    err = err.max((twice[i * ldc + j] - 2.0 * want as f32).abs());
                }
                assert!(
                    got[i * ldc + n..][..ldc - n].iter().all(|v| v.is_nan()),
                    "{m}x{k}x{n}: wrote outside"
                );
            }
            assert!(err < 1e-4 * (k as f32).sqrt(), "{m}x{k}x{n}: {err}");
        }
    }
}

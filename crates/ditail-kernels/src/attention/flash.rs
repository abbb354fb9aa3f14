//! Attention on cubecl's SPIR-V, MSL and CUDA compilers: q, k and v laid out per head with
//! Ditail's q/k mix applied (one kernel each, `heads.rs`), then burn-cubecl's flash
//! attention (cubek), autotuned between its tensor-core ("blackbox accelerated") and unit
//! tiles, which never materialises the score matrix.
//!
//! cubek's tiles need the head width to be a multiple of theirs: the accelerated tiles'
//! inner size is 16 on every cooperative-matrix device, and SD1.5's first level has heads
//! of 40. A width that is not a multiple of [`HEAD_ALIGN`] is padded with zeros (q, k and
//! v): zero columns add nothing to `q·k` and give zero output columns, which are cut off.
//! The kernel scales by `1/sqrt(padded width)`, so q is first multiplied by
//! `sqrt(padded / width)`, which makes the product the unpadded `q·k / sqrt(width)`
//! (burn's attention takes no explicit scale on this path: it sends one to the
//! materialised fallback). Without padding, burn-cubecl would quietly run that fallback for
//! every 40-wide head whose accelerated blueprint it could not build.
//!
//! Pinned source: burn-cubecl 0.22.1 `kernel/attention/{base,tune}.rs`, cubek-attention
//! 0.3.1 `forward/routines/{unit,blackbox_accelerated}.rs` (the head-width checks).

use std::sync::atomic::{AtomicUsize, Ordering};

use burn::backend::tensor::FloatTensor;
use burn::tensor::DType;
use burn::tensor::ops::AttentionModuleOptions;
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::attention::{AttentionStrategy, attention as cube_attention};
use burn_cubecl::tensor::CubeTensor;

use super::heads::{self, Source};
use super::{QkMix, cube_dims as dims, reference};

/// Head widths are padded to a multiple of this (the accelerated tiles' inner size).
const HEAD_ALIGN: usize = 16;

static LAUNCHES: AtomicUsize = AtomicUsize::new(0);

/// How many times this process has run the flash path.
pub(super) fn launches() -> usize {
    LAUNCHES.load(Ordering::Relaxed)
}

/// The head width the kernel runs at for heads of `head_dim`.
pub(super) fn padded_head_dim(head_dim: usize) -> usize {
    head_dim.next_multiple_of(HEAD_ALIGN)
}

/// Whether the flash path takes these operands: float tensors of one dtype, q `[batch,
/// tokens, heads * head_dim]` and matching k and v, either of the same layout or both
/// laid out per head beforehand (`[batch, heads, tokens, padded width]`, with nothing to
/// mix into them).
pub(super) fn takes(
    q: &CubeTensor,
    k: &CubeTensor,
    v: &CubeTensor,
    mix: &QkMix<CubeBackend>,
    heads: usize,
) -> bool {
    let Some([b, _, c]) = dims(q) else {
        return false;
    };
    let float = matches!(q.dtype, DType::F32 | DType::F16 | DType::BF16);
    if !(float && k.dtype == q.dtype && v.dtype == q.dtype && heads > 0 && c.is_multiple_of(heads))
    {
        return false;
    }
    let (ks, vs) = (k.meta.shape(), v.meta.shape());
    match (dims(k), dims(v)) {
        (Some(kd), Some(vd)) => kd[0] == b && kd[2] == c && vd == kd,
        _ => {
            let laid_out = ks.num_dims() == 4
                && [ks[0], ks[1], ks[3]] == [b, heads, padded_head_dim(c / heads)];
            laid_out && vs == ks && matches!(mix, QkMix::None)
        }
    }
}

/// Whether cubecl compiles this device's kernels to SPIR-V, MSL or CUDA (not WGSL: there
/// the WGSL kernel runs by default, and the flash path only when asked for).
pub(super) fn compiles_natively(device: &burn_cubecl::CubeDevice) -> bool {
    !crate::compiles_wgsl(device)
}

type T = FloatTensor<CubeBackend>;

/// Runs the flash attention with the mix; [`takes`] must have said yes.
///
/// q, k and v become `[batch, heads, tokens, width]` in one kernel each (k and v unless
/// they already are: a cross-attention's kept by `KeysValues`), the mix and the padding
/// applied on the way, and cubek's output goes back to `[batch, tokens, heads * head_dim]`
/// without the padding in one more (`heads.rs`).
pub(super) fn attention(q: T, k: T, v: T, mix: QkMix<CubeBackend>, heads: usize) -> T {
    let [_, _, c] = dims(&q).expect("checked by `takes`");
    let d = c / heads;
    let width = padded_head_dim(d);
    let q_scale = (width as f32 / d as f32).sqrt();
    // The kernel reads every operand as q's dtype; a mix in another (which ditail never
    // makes) is applied in tensor ops first.
    let dtype = q.dtype;
    let one_dtype = match &mix {
        QkMix::None | QkMix::InBatch => true,
        QkMix::InBatchMasked(m) => m.dtype == dtype,
        QkMix::Captured(sq, sk) => sq.dtype == dtype && sk.dtype == dtype,
        QkMix::CapturedMasked(sq, sk, m) => [sq, sk, m].iter().all(|t| t.dtype == dtype),
    };
    let (q, k, mix) = match one_dtype {
        true => (q, k, mix),
        false => {
            let (q, k) = reference::inject_qk::<CubeBackend>(q, k, mix);
            (q, k, QkMix::None)
        }
    };
    let parts = mix.parts();
    let (q_source, k_source, mask) = match &parts {
        None => (Source::None, Source::None, None),
        Some((None, mask)) => (Source::InBatch, Source::InBatch, mask.as_ref()),
        Some((Some((sq, sk)), mask)) => (Source::Separate(sq), Source::Separate(sk), mask.as_ref()),
    };
    let q4 = heads::heads(&q, heads, width, q_scale, q_source, mask);
    let (k4, v4) = match dims(&k) {
        Some(_) => (
            heads::heads(&k, heads, width, 1.0, k_source, mask),
            heads::heads(&v, heads, width, 1.0, Source::None, None),
        ),
        None => (k, v),
    };
    let out = cube_attention(
        q4,
        k4,
        v4,
        None,
        None,
        AttentionModuleOptions::default(),
        AttentionStrategy::default(),
    )
    .expect("burn-cubecl's attention falls back rather than failing");
    LAUNCHES.fetch_add(1, Ordering::Relaxed);
    heads::tokens(&out, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd_head_widths_pad_to_the_tile() {
        // SD1.5: 40, 80, 160; SDXL: 64; the VAE's mid-block attention: 512.
        for (d, padded) in [
            (40, 48),
            (80, 80),
            (160, 160),
            (64, 64),
            (512, 512),
            (8, 16),
        ] {
            assert_eq!(padded_head_dim(d), padded, "head width {d}");
        }
    }
}

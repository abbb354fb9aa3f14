//! The flash path of Ditail's attention (what SPIR-V, MSL and CUDA run: the q/k mix in
//! tensor ops, heads padded to cubek's tiles with q rescaled, burn-cubecl's autotuned flash
//! attention) on wgpu against the reference on the CPU, whole outputs: 1e-4 of max
//! |reference| in f32, 2e-2 in f16. In CI the adapter is Mesa's lavapipe compiled through
//! WGSL, where the path is forced (`AttentionChoice::Flash`, for the whole process: this
//! file's tests all use it); lavapipe cannot compile cubecl's SPIR-V (see the root
//! Cargo.toml's `vulkan` feature).

mod common;

use burn::prelude::*;
use burn::tensor::DType;
use common::attention::{Case, MaskKind, Source, check, inputs};
use common::wgpu_device;
use ditail::models::kernels::attention::{
    AttentionChoice, KeysValues, attention, attention_over, flash_launches, force_choice,
};

fn flash_device() -> Device {
    force_choice(Some(AttentionChoice::Flash));
    wgpu_device()
}

/// One case per kind of call and width that matters. Each new shape compiles and tunes new
/// kernels, which takes lavapipe ~20 s, so the grid is sparser than the WGSL kernel's.
fn case(batch: usize, heads: usize, head_dim: usize, n: (usize, usize), source: Source) -> Case {
    Case {
        batch,
        heads,
        head_dim,
        n_q: n.0,
        n_kv: n.1,
        source,
    }
}

#[test]
fn flash_path_matches_the_reference_in_f32() {
    let gpu = flash_device();
    for c in [
        // SD1.5's widths (40 padded to 48), SDXL's 64, the VAE's single 512-wide head.
        case(1, 2, 40, (64, 64), Source::None),
        case(3, 2, 40, (64, 64), Source::InBatch(MaskKind::Left)),
        case(2, 2, 80, (64, 64), Source::Captured(MaskKind::Image)),
        case(3, 2, 160, (64, 77), Source::None),
        case(3, 2, 64, (64, 64), Source::InBatch(MaskKind::Full)),
        case(1, 1, 512, (256, 256), Source::None),
        // Token counts that are no multiple of any tile.
        case(3, 3, 40, (100, 100), Source::InBatch(MaskKind::Image)),
        case(1, 3, 40, (65, 77), Source::None),
    ] {
        check(c, &gpu, DType::F32, 1e-4, flash_launches);
    }
}

#[test]
fn flash_path_matches_the_reference_in_f16() {
    let gpu = flash_device();
    for c in [
        case(3, 2, 40, (64, 64), Source::InBatch(MaskKind::Left)),
        case(3, 2, 160, (64, 77), Source::None),
    ] {
        check(c, &gpu, DType::F16, 2e-2, flash_launches);
    }
}

/// A cross-attention's keys and values laid out per head once (`KeysValues`, what a run
/// keeps across its steps) give the flash path's attention the same bits as laying them
/// out in the call: the same kernel copies them, once instead of every step.
#[test]
fn keys_values_laid_out_beforehand_give_the_same_bits() {
    let gpu = flash_device();
    for (dtype, c) in [
        (DType::F32, case(3, 2, 40, (64, 77), Source::None)),
        (DType::F16, case(3, 2, 40, (64, 77), Source::None)),
        (DType::F16, case(2, 3, 64, (100, 77), Source::None)),
    ] {
        let i = inputs(c, &gpu, dtype);
        let kv = KeysValues::new(i.k.clone(), i.v.clone(), c.heads);
        assert!(kv.per_head(), "{c:?}: not laid out for the flash path");
        let before = flash_launches();
        let over = attention_over(i.q.clone(), kv, c.heads).into_data();
        // Moved (the file's other tests run the path meanwhile, so not by exactly 1).
        assert!(
            flash_launches() > before,
            "{c:?}: the flash path did not run"
        );
        let plain = attention(i.q, i.k, i.v, c.heads, None).into_data();
        assert_eq!(over, plain, "{c:?} {dtype:?}");
    }
}

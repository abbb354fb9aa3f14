//! The fused WGSL attention kernel (`shaders/attention.wgsl`) on wgpu (in CI: Mesa's
//! lavapipe, which the default build compiles WGSL for) against the reference (ordinary
//! tensor ops on the CPU backend, same inputs): whole outputs within 1e-4 of max
//! |reference| in f32, 2e-2 in f16, over SD1.5's head widths (40, 80, 160) and the
//! fixtures' (4, 8, 12, 16), self-attention (keys = queries, with and without Ditail's q/k
//! injection under full, half and graded masks, the source in the batch or captured apart)
//! and cross-attention over 77 text tokens, batch 1 and 3. `tests/attention_flash.rs` runs
//! the same cases through the flash path (SPIR-V, MSL and CUDA's).

mod common;

use burn::prelude::*;
use burn::tensor::DType;
use common::attention::{Case, MaskKind, Source, cases, inputs};
use common::{assert_close, cpu, wgpu_device};
use ditail::models::gpu;
use ditail::models::kernels::attention::{
    attention, attention_reference, kernel_applies, kernel_launches,
};

/// The wgpu device, if its compiler is WGSL (a build with `vulkan` compiles SPIR-V for
/// Vulkan adapters, where the WGSL kernel does not run: these tests then say so and pass).
fn wgsl_device() -> Option<Device> {
    let gpu = wgpu_device();
    let compiler = gpu::info(&gpu).expect("a GPU device").compiler;
    if compiler != gpu::WGSL_COMPILER {
        eprintln!("the adapter compiles {compiler}: the WGSL kernel does not run there");
        return None;
    }
    Some(gpu)
}

/// [`common::attention::check`] through the WGSL kernel, which must take the case.
fn check(case: Case, gpu: &Device, dtype: DType, tol: f32) {
    assert!(
        kernel_applies(gpu, dtype, case.head_dim),
        "{case:?}: the kernel should take head width {} in {dtype:?}",
        case.head_dim
    );
    common::attention::check(case, gpu, dtype, tol, kernel_launches);
}

#[test]
fn kernel_matches_the_reference_in_f32() {
    let Some(gpu) = wgsl_device() else {
        return;
    };
    for case in cases(&[4, 8, 12, 16, 40, 80, 160], &[64], false) {
        check(case, &gpu, DType::F32, 1e-4);
    }
    for case in cases(&[8, 40, 80, 160], &[1024], true) {
        check(case, &gpu, DType::F32, 1e-4);
    }
}

#[test]
fn kernel_matches_the_reference_in_f16() {
    let Some(gpu) = wgsl_device() else {
        return;
    };
    let f16_works = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Tensor::<1>::ones([4], &gpu)
            .cast(DType::F16)
            .sum()
            .into_scalar::<f32>()
    }));
    assert!(
        matches!(f16_works, Ok(v) if v == 4.0),
        "the wgpu adapter has no shader-f16: the f16 kernel cannot be checked here (Mesa's \
         lavapipe has it: `apt-get install mesa-vulkan-drivers`, as .ci/run does; without a \
         Vulkan driver wgpu falls back to OpenGL, which has no f16)"
    );
    for case in cases(&[8, 40, 80, 160], &[64], false) {
        check(case, &gpu, DType::F16, 2e-2);
    }
    for case in cases(&[8, 40, 80, 160], &[256], true) {
        check(case, &gpu, DType::F16, 2e-2);
    }
}

/// SD1.5's longest self-attention: 4096 tokens (a 512x512 image), head width 40, with the
/// in-batch injection under a half mask.
#[test]
fn kernel_matches_the_reference_at_4096_tokens() {
    let Some(gpu) = wgsl_device() else {
        return;
    };
    let case = Case {
        batch: 3,
        heads: 1,
        head_dim: 40,
        n_q: 4096,
        n_kv: 4096,
        source: Source::InBatch(MaskKind::Left),
    };
    check(case, &gpu, DType::F32, 1e-4);
}

/// Query lengths that are not a multiple of the workgroup's 64 rows, key lengths that are
/// not a multiple of the key tile, and a batch of 1 with an in-batch source (nothing to mix).
#[test]
fn ragged_lengths_match_the_reference() {
    let Some(gpu) = wgsl_device() else {
        return;
    };
    for (n_q, n_kv, batch, source) in [
        (100, 100, 3, Source::InBatch(MaskKind::Image)),
        (65, 77, 1, Source::None),
        (1, 3, 2, Source::None),
        (49, 49, 1, Source::InBatch(MaskKind::Left)),
    ] {
        let case = Case {
            batch,
            heads: 3,
            head_dim: 40,
            n_q,
            n_kv,
            source,
        };
        check(case, &gpu, DType::F32, 1e-4);
    }
}

/// Widths the WGSL kernel does not take (the VAE's single 512-wide head, a width not a
/// multiple of 4) still match: the reference runs them on WGSL, the flash path (padded to
/// its tiles) on SPIR-V.
#[test]
fn other_widths_match_the_reference() {
    let Some(gpu) = wgsl_device() else {
        return;
    };
    assert!(!kernel_applies(&gpu, DType::F32, 512));
    assert!(!kernel_applies(&gpu, DType::F32, 6));
    assert!(!kernel_applies(&cpu(), DType::F32, 40));
    assert!(!kernel_applies(&gpu, DType::BF16, 40));
    let case = Case {
        batch: 3,
        heads: 1,
        head_dim: 6,
        n_q: 16,
        n_kv: 16,
        source: Source::InBatch(MaskKind::Left),
    };
    let want = {
        let i = inputs(case, &cpu(), DType::F32);
        attention_reference(i.q, i.k, i.v, 1, i.inject)
    };
    let i = inputs(case, &gpu, DType::F32);
    let got = attention(i.q, i.k, i.v, 1, i.inject);
    assert_close("head width 6", &got.into_data(), &want.into_data(), 1e-4);
}

//! The fused attention kernel (`shaders/attention.wgsl`) on wgpu (in CI: Mesa's lavapipe)
//! against the reference (ordinary tensor ops on the CPU backend, same inputs): whole
//! outputs within 1e-4 of max |reference| in f32, 2e-2 in f16, over SD1.5's head widths
//! (40, 80, 160) and the fixtures' (4, 8, 12, 16), self-attention (keys = queries, with and
//! without Ditail's q/k injection under full, half and graded masks, the source in the
//! batch or captured apart) and cross-attention over 77 text tokens, batch 1 and 3.

mod common;

use burn::prelude::*;
use burn::tensor::DType;
use common::{assert_close, cpu, wgpu_device};
use ditail::models::QkInjection;
use ditail::models::kernels::attention::{
    attention, attention_reference, kernel_applies, kernel_launches,
};

/// Deterministic values in [-1, 1) (a 64-bit LCG), so failures reproduce.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum MaskKind {
    Full,
    /// 1 on the left half of a `side` x `side` grid.
    Left,
    /// Graded values in [0, 1], as a blurred mask image gives.
    Image,
}

#[derive(Clone, Copy, Debug)]
enum Source {
    /// No injection.
    None,
    /// Batch element 0 is the source.
    InBatch(MaskKind),
    /// A captured `[1, n, c]` source; every element is a target.
    Captured(MaskKind),
}

#[derive(Clone, Copy, Debug)]
struct Case {
    batch: usize,
    heads: usize,
    head_dim: usize,
    n_q: usize,
    n_kv: usize,
    source: Source,
}

fn mask_values(kind: MaskKind, n: usize) -> Option<Vec<f32>> {
    let side = (n as f64).sqrt() as usize;
    match kind {
        MaskKind::Full => None,
        MaskKind::Left => Some((0..n).map(|i| f32::from(i % side < side / 2)).collect()),
        MaskKind::Image => Some((0..n).map(|i| ((i * 7) % 11) as f32 / 10.0).collect()),
    }
}

struct Inputs {
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    inject: Option<QkInjection>,
}

fn tensor(data: &[f32], shape: [usize; 3], device: &Device, dtype: DType) -> Tensor<3> {
    Tensor::<3>::from_data(TensorData::new(data.to_vec(), shape), device).cast(dtype)
}

fn inputs(case: Case, device: &Device, dtype: DType) -> Inputs {
    let c = case.heads * case.head_dim;
    let (b, n_q, n_kv) = (case.batch, case.n_q, case.n_kv);
    let seed = (case.head_dim * 1000 + n_q * 10 + n_kv + b) as u64;
    // Scores of a few units, as trained attention has: softmax neither flat nor one-hot.
    let scaled = |v: Vec<f32>| v.into_iter().map(|x| x * 2.0).collect::<Vec<_>>();
    let q = tensor(
        &scaled(values(b * n_q * c, seed)),
        [b, n_q, c],
        device,
        dtype,
    );
    let k = tensor(
        &scaled(values(b * n_kv * c, seed + 1)),
        [b, n_kv, c],
        device,
        dtype,
    );
    let v = tensor(&values(b * n_kv * c, seed + 2), [b, n_kv, c], device, dtype);
    let mask = |kind| {
        mask_values(kind, n_q)
            .map(|m| Tensor::<1>::from_data(TensorData::new(m, [n_q]), device).cast(dtype))
    };
    let inject = match case.source {
        Source::None => None,
        Source::InBatch(kind) => Some(QkInjection {
            source: None,
            mask: mask(kind),
        }),
        Source::Captured(kind) => Some(QkInjection {
            source: Some((
                tensor(
                    &scaled(values(n_q * c, seed + 3)),
                    [1, n_q, c],
                    device,
                    dtype,
                ),
                tensor(
                    &scaled(values(n_q * c, seed + 4)),
                    [1, n_q, c],
                    device,
                    dtype,
                ),
            )),
            mask: mask(kind),
        }),
    };
    Inputs { q, k, v, inject }
}

/// Runs `case` through the kernel on wgpu and through the reference on the CPU.
fn check(case: Case, gpu: &Device, dtype: DType, tol: f32) {
    assert!(
        kernel_applies(gpu, dtype, case.head_dim),
        "{case:?}: the kernel should take head width {} in {dtype:?}",
        case.head_dim
    );
    let want = {
        let i = inputs(case, &cpu(), DType::F32);
        // The reference sees the kernel's inputs: rounded to f16 when the kernel is f16.
        let round = |t: Tensor<3>| t.cast(dtype).cast(DType::F32);
        let inject = i.inject.map(|inj| QkInjection {
            source: inj.source.map(|(sq, sk)| (round(sq), round(sk))),
            mask: inj.mask.map(|m| m.cast(dtype).cast(DType::F32)),
        });
        attention_reference(round(i.q), round(i.k), round(i.v), case.heads, inject)
    };
    let i = inputs(case, gpu, dtype);
    let before = kernel_launches();
    let got = attention(i.q, i.k, i.v, case.heads, i.inject);
    assert!(
        kernel_launches() > before,
        "{case:?}: the kernel did not run"
    );
    let rel = assert_close(
        &format!("{case:?} {dtype:?}"),
        &got.cast(DType::F32).into_data(),
        &want.into_data(),
        tol,
    );
    eprintln!("{case:?} {dtype:?}: rel err {rel:e}");
}

/// Every kind of call per head width and length: self-attention without injection (batch
/// 1), cross-attention (batch 3), the three masks with the source in the batch (batch 3)
/// and a captured source (batch 2). `few` keeps plain, cross and the half mask (for the
/// long lengths, where lavapipe is slow).
fn cases(head_dims: &[usize], lengths: &[usize], few: bool) -> Vec<Case> {
    let mut out = Vec::new();
    for &head_dim in head_dims {
        for &n in lengths {
            let case = |batch, n_kv, source| Case {
                batch,
                heads: 2,
                head_dim,
                n_q: n,
                n_kv,
                source,
            };
            out.push(case(1, n, Source::None));
            out.push(case(3, 77, Source::None));
            out.push(case(3, n, Source::InBatch(MaskKind::Left)));
            if !few {
                out.push(case(3, n, Source::InBatch(MaskKind::Full)));
                out.push(case(3, n, Source::InBatch(MaskKind::Image)));
                out.push(case(2, n, Source::Captured(MaskKind::Image)));
            }
        }
    }
    out
}

#[test]
fn kernel_matches_the_reference_in_f32() {
    let gpu = wgpu_device();
    for case in cases(&[4, 8, 12, 16, 40, 80, 160], &[64], false) {
        check(case, &gpu, DType::F32, 1e-4);
    }
    for case in cases(&[8, 40, 80, 160], &[1024], true) {
        check(case, &gpu, DType::F32, 1e-4);
    }
}

#[test]
fn kernel_matches_the_reference_in_f16() {
    let gpu = wgpu_device();
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
    let gpu = wgpu_device();
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
    let gpu = wgpu_device();
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

#[test]
fn other_widths_fall_back_to_the_reference() {
    let gpu = wgpu_device();
    // The VAE's single 512-wide head at SD1.5 size, and a width not a multiple of 4.
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

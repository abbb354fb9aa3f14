//! What the attention tests share: deterministic inputs for every kind of call Ditail
//! makes (self-attention with the q/k injection under full, half and graded masks, the
//! source in the batch or captured; cross-attention), and the comparison with the
//! reference on the CPU.

use burn::prelude::*;
use burn::tensor::DType;
use ditail::models::QkInjection;
use ditail::models::kernels::attention::{attention, attention_reference};

use super::{assert_close, cpu};

/// Deterministic values in [-1, 1) (a 64-bit LCG), so failures reproduce.
pub fn values(n: usize, seed: u64) -> Vec<f32> {
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
pub enum MaskKind {
    Full,
    /// 1 on the left half of a `side` x `side` grid.
    Left,
    /// Graded values in [0, 1], as a blurred mask image gives.
    Image,
}

#[derive(Clone, Copy, Debug)]
pub enum Source {
    /// No injection.
    None,
    /// Batch element 0 is the source.
    InBatch(MaskKind),
    /// A captured `[1, n, c]` source; every element is a target.
    Captured(MaskKind),
}

#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub batch: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub n_q: usize,
    pub n_kv: usize,
    pub source: Source,
}

pub fn mask_values(kind: MaskKind, n: usize) -> Option<Vec<f32>> {
    let side = (n as f64).sqrt() as usize;
    match kind {
        MaskKind::Full => None,
        MaskKind::Left => Some((0..n).map(|i| f32::from(i % side < side / 2)).collect()),
        MaskKind::Image => Some((0..n).map(|i| ((i * 7) % 11) as f32 / 10.0).collect()),
    }
}

pub struct Inputs {
    pub q: Tensor<3>,
    pub k: Tensor<3>,
    pub v: Tensor<3>,
    pub inject: Option<QkInjection>,
}

pub fn tensor(data: &[f32], shape: [usize; 3], device: &Device, dtype: DType) -> Tensor<3> {
    Tensor::<3>::from_data(TensorData::new(data.to_vec(), shape), device).cast(dtype)
}

pub fn inputs(case: Case, device: &Device, dtype: DType) -> Inputs {
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

/// Runs `case` through `attention` on `gpu` and through the reference on the CPU, and
/// asserts that `launches` (the path's counter) moved.
pub fn check(case: Case, gpu: &Device, dtype: DType, tol: f32, launches: fn() -> usize) {
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
    let before = launches();
    let got = attention(i.q, i.k, i.v, case.heads, i.inject);
    let got = got.cast(DType::F32).into_data();
    assert!(launches() > before, "{case:?}: the fused path did not run");
    let rel = assert_close(&format!("{case:?} {dtype:?}"), &got, &want.into_data(), tol);
    eprintln!("{case:?} {dtype:?}: rel err {rel:e}");
}

/// Every kind of call per head width and length: self-attention without injection (batch
/// 1), cross-attention (batch 3), the three masks with the source in the batch (batch 3)
/// and a captured source (batch 2). `few` keeps plain, cross and the half mask (for the
/// long lengths, where lavapipe is slow).
pub fn cases(head_dims: &[usize], lengths: &[usize], few: bool) -> Vec<Case> {
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

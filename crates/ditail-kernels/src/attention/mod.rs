//! Multi-head attention with Ditail's self-attention q/k injection fused in.
//!
//! [`attention`] is what the networks call. Where cubecl compiles WGSL (wgpu on DX12, or
//! any adapter in a build without the `vulkan`/`metal` features) it runs the flash-style
//! kernel in `shaders/attention.wgsl`, which never materialises the score matrix and reads
//! the targets' q and k as the masked mix with the source's while loading them (so an
//! injection costs no extra tensor). Where cubecl compiles SPIR-V, MSL or CUDA it runs
//! burn-cubecl's autotuned flash attention (cubek; `flash.rs`) on q, k and v laid out per
//! head with the mix applied and the heads padded to its tiles' width, one kernel each
//! (`heads.rs`; tensor-core tiles where the device has them). On the CPU
//! (burn-flex, f32) it runs a flash-style kernel of our own (`cpu.rs`: the mix in tensor
//! ops, then attention with a vectorised softmax). Everywhere else (dtypes the kernels do
//! not take) it runs the reference ([`attention_reference`]): the mix in ordinary tensor
//! ops, then burn's own attention (`module::attention`), in query chunks that keep every
//! score buffer under WebGPU's 128 MiB binding limit. A GPU run that takes the reference
//! says so once on stderr.
//!
//! The choice is made per call by the backend of the tensors ([`AttentionOps`], a burn
//! backend extension); `DITAIL_ATTENTION=reference` in the environment turns the kernels off
//! (for comparisons and as an escape hatch), `DITAIL_ATTENTION=flash` runs the flash path on
//! a WGSL adapter too ([`AttentionChoice`]).

#[cfg(feature = "flex")]
mod cpu;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod flash;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod heads;
mod keys_values;
mod reference;
#[cfg(feature = "wgpu")]
mod wgsl;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use burn::backend::{
    Backend, Dispatch, DispatchTensor, ExtensionType, backend_extension, tensor::FloatTensor,
};
use burn::prelude::*;
use burn::tensor::DType;

#[cfg(feature = "flex")]
use crate::timing;

pub use keys_values::{KeysValues, attention_over};

/// How a self-attention layer's target elements take the source's q and k.
///
/// Each target's q (and k) becomes `x + (source - x) * mask[token]`, or exactly the
/// source's with no mask (METHOD.md stage 2: `mask * source + (1 - mask) * target`).
#[derive(Clone, Debug)]
pub struct QkInjection {
    /// The source's q and k, each `[1, tokens, inner_dim]`, and every batch element is a
    /// target; `None`: batch element 0 is the source (left as it is) and the others are
    /// targets (the `[source, positive, negative]` batch).
    pub source: Option<(Tensor<3>, Tensor<3>)>,
    /// The source's weight per token, `[tokens]` (row-major over the layer's grid), in the
    /// dtype of q; `None`: 1 at every token (a plain copy).
    pub mask: Option<Tensor<1>>,
}

/// A [`QkInjection`] at the backend level: where the source is and whether a mask weighs it.
///
/// One variant per combination because burn's extension macro routes tensors, `Vec`s of
/// tensors and `ExtensionType`s across the dispatch boundary, but not `Option<tensor>`
/// arguments.
#[derive(ExtensionType)]
#[extension_type(fusion: cfg(any(feature = "wgpu", feature = "cuda")))]
pub enum QkMix<B: Backend> {
    /// Nothing is injected.
    None,
    /// Batch element 0 is the source and the others copy its q and k.
    InBatch,
    /// Batch element 0 is the source, mixed into the others by the mask `[tokens]`.
    InBatchMasked(FloatTensor<B>),
    /// Every element copies the given source q and k (`[1, tokens, inner]` each).
    Captured(FloatTensor<B>, FloatTensor<B>),
    /// Every element is mixed with the given source q and k by the mask.
    CapturedMasked(FloatTensor<B>, FloatTensor<B>, FloatTensor<B>),
}

impl<B: Backend> QkMix<B> {
    /// The separate source's q and k and the mask, as options (`None` source: element 0).
    #[allow(clippy::type_complexity)]
    pub(crate) fn parts(
        self,
    ) -> Option<(
        Option<(FloatTensor<B>, FloatTensor<B>)>,
        Option<FloatTensor<B>>,
    )> {
        match self {
            QkMix::None => None,
            QkMix::InBatch => Some((None, None)),
            QkMix::InBatchMasked(m) => Some((None, Some(m))),
            QkMix::Captured(q, k) => Some((Some((q, k)), None)),
            QkMix::CapturedMasked(q, k, m) => Some((Some((q, k)), Some(m))),
        }
    }
}

fn mix_of(inject: Option<QkInjection>) -> QkMix<Dispatch> {
    let Some(QkInjection { source, mask }) = inject else {
        return QkMix::None;
    };
    match (source, mask.map(Tensor::into_dispatch)) {
        (None, None) => QkMix::InBatch,
        (None, Some(m)) => QkMix::InBatchMasked(m),
        (Some((q, k)), None) => QkMix::Captured(q.into_dispatch(), k.into_dispatch()),
        (Some((q, k)), Some(m)) => QkMix::CapturedMasked(q.into_dispatch(), k.into_dispatch(), m),
    }
}

/// Attention as a backend operation: the reference by default, a kernel where a backend
/// has one.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    Cube: cfg(any(feature = "wgpu", feature = "cuda")),
    NdArray: cfg(feature = "ndarray"),
    Fusion: cfg(any(feature = "wgpu", feature = "cuda")),
)]
pub trait AttentionOps: Backend {
    /// Multi-head scaled dot-product attention (scale `1/sqrt(head_dim)`) of `q` over
    /// `k`/`v`, the targets' q and k first mixed with the source's as `mix` says.
    ///
    /// # Shapes
    /// - `q`: `[batch, n_q, heads * head_dim]`; `k`, `v`: `[batch, n_kv, heads * head_dim]`
    ///   (an injection needs `n_kv = n_q`), or both laid out per head by
    ///   [`AttentionOps::ditail_attention_heads`] (`[batch, heads, n_kv, width]`, with no
    ///   injection)
    /// - output: `[batch, n_q, heads * head_dim]`
    ///
    /// Under burn's fusion (every GPU backend) the call is one opaque operation in the
    /// stream, run by the inner backend's implementation when the stream executes.
    #[fusion(dtype = q, shape = q)]
    fn ditail_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        #[extension_type] mix: QkMix<Self>,
        heads: usize,
    ) -> FloatTensor<Self> {
        reference::attention::<Self>(q, k, v, mix, heads)
    }

    /// Keys or values laid out per head, each head's columns zero-padded to `width`: the
    /// layout the flash path reads ([`KeysValues`] keeps a cross-attention's so).
    ///
    /// # Shapes
    /// - `x`: `[batch, tokens, heads * head_dim]`, `head_dim <= width`
    /// - output: `[batch, heads, tokens, width]`
    #[fusion(dtype = x, shape = Shape::new([x[0], *heads, x[1], *width]))]
    fn ditail_attention_heads(
        x: FloatTensor<Self>,
        heads: usize,
        width: usize,
    ) -> FloatTensor<Self> {
        reference::heads::<Self>(x, heads, width)
    }
}

#[cfg(feature = "flex")]
impl AttentionOps for burn::backend::Flex {
    fn ditail_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mix: QkMix<Self>,
        heads: usize,
    ) -> FloatTensor<Self> {
        if kernel_enabled() && cpu::supports(&q, &k, &v, heads) {
            CPU_LAUNCHES.fetch_add(1, Ordering::Relaxed);
            let (q, k) = reference::inject_qk::<Self>(q, k, mix);
            let (qs, nkv) = (q.layout().shape(), k.layout().shape()[1]);
            let macs = qs[0] * qs[1] * nkv * qs[2] * 2;
            return timing::timed(timing::Kind::Attention, macs, || {
                cpu::attention(q, k, v, heads)
            });
        }
        reference::attention::<Self>(q, k, v, mix, heads)
    }
}
#[cfg(feature = "ndarray")]
impl AttentionOps for burn::backend::NdArray {}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl AttentionOps for burn_cubecl::CubeBackend {
    fn ditail_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mix: QkMix<Self>,
        heads: usize,
    ) -> FloatTensor<Self> {
        let choice = choice();
        let per_head = |t: &CubeTensor| t.meta.shape().num_dims() == 4;
        let (k, v) = match per_head(&k) || per_head(&v) {
            false => (k, v),
            true if choice != AttentionChoice::Reference
                && flash::takes(&q, &k, &v, &mix, heads) =>
            {
                return flash::attention(q, k, v, mix, heads);
            }
            // Laid out for a flash path that is not what runs: back to tokens.
            true => {
                let d = q.meta.shape()[2] / heads.max(1);
                let back = |t: CubeTensor| match per_head(&t) {
                    true => heads::tokens(&t, d),
                    false => t,
                };
                (back(k), back(v))
            }
        };
        if choice == AttentionChoice::Reference {
            return reference::attention::<Self>(q, k, v, mix, heads);
        }
        let flash = flash::takes(&q, &k, &v, &mix, heads);
        if choice == AttentionChoice::Flash && flash {
            return flash::attention(q, k, v, mix, heads);
        }
        #[cfg(feature = "wgpu")]
        if wgsl::supports(&q, &k, &v, &mix, heads) {
            LAUNCHES.fetch_add(1, Ordering::Relaxed);
            return wgsl::attention(q, k, v, mix, heads);
        }
        if flash && flash::compiles_natively(&q.device) {
            return flash::attention(q, k, v, mix, heads);
        }
        note_reference_on_gpu(&q);
        reference::attention::<Self>(q, k, v, mix, heads)
    }

    fn ditail_attention_heads(
        x: FloatTensor<Self>,
        heads: usize,
        width: usize,
    ) -> FloatTensor<Self> {
        heads::heads(&x, heads, width, 1.0, heads::Source::None, None)
    }
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
use burn_cubecl::tensor::CubeTensor;

/// `[d0, d1, d2]` of a 3-D cube tensor (the kernels' operands), `None` for another rank.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn cube_dims(t: &burn_cubecl::tensor::CubeTensor) -> Option<[usize; 3]> {
    let shape = t.meta.shape();
    (shape.num_dims() == 3).then(|| [shape[0], shape[1], shape[2]])
}

/// Says once per process that a GPU attention took the reference (the mix in tensor ops,
/// then burn's own attention op per query chunk, not ditail's fused kernels), so that a
/// slow path is never silent.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn note_reference_on_gpu(q: &burn_cubecl::tensor::CubeTensor) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        eprintln!(
            "ditail: attention on {} ({:?}, shape {:?}) runs the reference path (burn's \
             attention op per query chunk, the q/k mix in separate kernels): no fused kernel \
             of this build takes it",
            q.device.client().name(),
            q.dtype,
            q.meta.shape(),
        )
    });
}

static LAUNCHES: AtomicUsize = AtomicUsize::new(0);
static CPU_LAUNCHES: AtomicUsize = AtomicUsize::new(0);

/// How many times this process has run the attention kernel (tests use it to know that
/// the kernel, not the reference, answered).
pub fn kernel_launches() -> usize {
    LAUNCHES.load(Ordering::Relaxed)
}

/// How many times this process has run the CPU attention kernel.
pub fn cpu_kernel_launches() -> usize {
    CPU_LAUNCHES.load(Ordering::Relaxed)
}

/// How many times this process has run burn-cubecl's flash attention for Ditail's attention
/// (the SPIR-V, MSL and CUDA compilers' path; see `flash.rs`).
pub fn flash_launches() -> usize {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    {
        flash::launches()
    }
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    {
        0
    }
}

/// Which attention runs, process-wide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionChoice {
    /// The best each backend has: the CPU kernel, the WGSL kernel where WGSL is compiled,
    /// the flash path on SPIR-V, MSL and CUDA, else the reference.
    Auto,
    /// The reference everywhere (`DITAIL_ATTENTION=reference`): for comparisons, and as an
    /// escape hatch.
    Reference,
    /// On a GPU, burn-cubecl's flash attention whatever the compiler, WGSL too
    /// (`DITAIL_ATTENTION=flash`): for comparing it with the WGSL kernel on one adapter.
    Flash,
}

static FORCED: Mutex<Option<AttentionChoice>> = Mutex::new(None);

/// The attention in use: [`force_choice`]'s, else `DITAIL_ATTENTION`'s (read once).
pub fn choice() -> AttentionChoice {
    static FROM_ENV: OnceLock<AttentionChoice> = OnceLock::new();
    if let Some(c) = *FORCED.lock().unwrap_or_else(|e| e.into_inner()) {
        return c;
    }
    *FROM_ENV.get_or_init(|| {
        if super::switches::env_is("DITAIL_ATTENTION", "reference") {
            AttentionChoice::Reference
        } else if super::switches::env_is("DITAIL_ATTENTION", "flash") {
            AttentionChoice::Flash
        } else {
            AttentionChoice::Auto
        }
    })
}

/// Sets the attention for the whole process (`None`: back to the environment's), for tests
/// and benchmarks that compare the paths in one process. Calls already queued under burn's
/// fusion run with the choice in force when the stream executes.
pub fn force_choice(choice: Option<AttentionChoice>) {
    *FORCED.lock().unwrap_or_else(|e| e.into_inner()) = choice;
}

/// Whether the kernels (WGSL, flash and CPU) may be used: not when `DITAIL_ATTENTION=reference`.
pub fn kernel_enabled() -> bool {
    choice() != AttentionChoice::Reference
}

/// Whether the attention kernel takes these shapes on `device` and dtype: wgpu, f32 or
/// f16, head width a multiple of 4 up to 256.
pub fn kernel_applies(device: &Device, dtype: DType, head_dim: usize) -> bool {
    #[cfg(feature = "wgpu")]
    {
        kernel_enabled() && wgsl::applies_to(device, dtype, head_dim)
    }
    #[cfg(not(feature = "wgpu"))]
    {
        let _ = (device, dtype, head_dim);
        false
    }
}

/// Multi-head attention, `heads` heads of width `q.dims()[2] / heads`, with an optional
/// q/k injection: the kernel where it applies, else the reference.
///
/// # Shapes
/// - `q`: `[batch, n_q, heads * head_dim]`; `k`, `v`: `[batch, n_kv, heads * head_dim]`
/// - output: `[batch, n_q, heads * head_dim]`
pub fn attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
    inject: Option<QkInjection>,
) -> Tensor<3> {
    on_dispatch(
        <Dispatch as AttentionOps>::ditail_attention,
        q,
        k,
        v,
        heads,
        inject,
    )
}

/// [`attention`] through the reference on any backend, never the kernel.
///
/// # Shapes
/// As [`attention`].
pub fn attention_reference(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
    inject: Option<QkInjection>,
) -> Tensor<3> {
    on_dispatch(reference::attention::<Dispatch>, q, k, v, heads, inject)
}

/// Calls a dispatch-level attention `op` on `Tensor`s.
fn on_dispatch(
    op: fn(
        DispatchTensor,
        DispatchTensor,
        DispatchTensor,
        QkMix<Dispatch>,
        usize,
    ) -> DispatchTensor,
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
    inject: Option<QkInjection>,
) -> Tensor<3> {
    let (q, k, v) = (q.into_dispatch(), k.into_dispatch(), v.into_dispatch());
    Tensor::from_dispatch(op(q, k, v, mix_of(inject), heads))
}

/// Mixes a source into the target elements of `x` as Ditail injects features, in ordinary
/// tensor ops: with `source` given every element is a target, else element 0 is the source
/// and is kept; each target becomes `x + (source - x) * mask`, or the source itself without
/// a mask. The q/k injection of [`attention_reference`] is this on `[batch, tokens,
/// inner]` with the mask laid on tokens; the U-Net's conv-feature injection uses it on
/// `[batch, channels, h, w]`.
///
/// # Shapes
/// - `x`: `[batch, ...]`; `source`: `[1, ...]`; `mask`: broadcastable against one element
/// - output: like `x`
pub fn mix_source<const D: usize>(
    x: Tensor<D>,
    source: Option<Tensor<D>>,
    mask: Option<Tensor<D>>,
) -> Tensor<D> {
    Tensor::from_dispatch(reference::mix_source::<Dispatch>(
        x.into_dispatch(),
        source.map(Tensor::into_dispatch),
        mask.map(Tensor::into_dispatch),
    ))
}

/// The q and k an injection makes, in ordinary tensor ops (what the kernel computes as it
/// loads them).
///
/// # Shapes
/// - `q`, `k`: `[batch, tokens, inner_dim]`; outputs: the same.
pub fn inject_reference(q: Tensor<3>, k: Tensor<3>, inject: QkInjection) -> (Tensor<3>, Tensor<3>) {
    let (q, k) = reference::inject_qk::<Dispatch>(
        q.into_dispatch(),
        k.into_dispatch(),
        mix_of(Some(inject)),
    );
    (Tensor::from_dispatch(q), Tensor::from_dispatch(k))
}

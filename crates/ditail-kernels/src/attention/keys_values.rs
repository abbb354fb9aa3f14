//! A cross-attention's keys and values, laid out once as the attention on their device
//! reads them.
//!
//! The flash path (SPIR-V, MSL and CUDA; `flash.rs`) reads k and v as `[batch, heads,
//! tokens, width]`, each head padded to its tiles' width, and lays out the `[batch, tokens,
//! heads * head_dim]` it is given in one kernel each (`heads.rs`). A cross-attention's keys
//! and values come from the text alone, so a run that keeps them across its steps
//! (`ditail-models`' `cross_kv`) can keep them laid out too: [`KeysValues::new`] does the
//! layout where the flash path will read them, and every later step's attention skips its
//! two layout kernels (SD1.5: 32 a step, SDXL: 140). Elsewhere (the WGSL kernel, the CPU,
//! the reference) they stay as they are.
//!
//! Where they were laid out and the attention that runs is not the flash path after all
//! (`force_choice` between the layout and the call), it lays them back first: the same
//! values either way, at one kernel each.

use burn::backend::Dispatch;
use burn::prelude::*;
use burn::tensor::DType;

use super::{AttentionOps, QkMix};

/// A cross-attention's keys and values (from `to_k` and `to_v`), in the layout the
/// attention on their device reads.
#[derive(Clone, Debug)]
pub struct KeysValues {
    layout: Layout,
}

#[derive(Clone, Debug)]
enum Layout {
    /// `[batch, tokens, heads * head_dim]` each, as projected.
    Tokens(Tensor<3>, Tensor<3>),
    /// `[batch, heads, tokens, width]` each, heads zero-padded to `width`: the flash path's.
    PerHead(Tensor<4>, Tensor<4>),
}

impl KeysValues {
    /// The keys and values of a `heads`-head attention, laid out per head where the
    /// attention on their device runs the flash path.
    ///
    /// # Shapes
    /// - `k`, `v`: `[batch, tokens, heads * head_dim]`
    pub fn new(k: Tensor<3>, v: Tensor<3>, heads: usize) -> Self {
        let [b, n, c] = k.dims();
        let layout = match per_head_width(&k.device(), k.dtype(), heads, c) {
            Some(width) if v.dims() == [b, n, c] && v.dtype() == k.dtype() => {
                let lay = |t: Tensor<3>| -> Tensor<4> {
                    Tensor::from_dispatch(<Dispatch as AttentionOps>::ditail_attention_heads(
                        t.into_dispatch(),
                        heads,
                        width,
                    ))
                };
                Layout::PerHead(lay(k), lay(v))
            }
            _ => Layout::Tokens(k, v),
        };
        Self { layout }
    }

    /// Whether they are laid out per head (the flash path's layout).
    pub fn per_head(&self) -> bool {
        matches!(self.layout, Layout::PerHead(..))
    }
}

/// The width each head is padded to when the attention on `device` reads keys and values
/// per head (the flash path will run: a cubecl device that compiles SPIR-V, MSL or CUDA,
/// or any with `DITAIL_ATTENTION=flash`), else `None`.
fn per_head_width(device: &Device, dtype: DType, heads: usize, channels: usize) -> Option<usize> {
    let float = matches!(dtype, DType::F32 | DType::F16 | DType::BF16);
    if !float || heads == 0 || !channels.is_multiple_of(heads) {
        return None;
    }
    match device.as_dispatch() {
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        burn::backend::DispatchDevice::Cube(cube) => {
            use super::{AttentionChoice, choice};
            let flash = match choice() {
                AttentionChoice::Reference => false,
                AttentionChoice::Flash => true,
                AttentionChoice::Auto => super::flash::compiles_natively(cube),
            };
            flash.then(|| super::flash::padded_head_dim(channels / heads))
        }
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Multi-head attention of `q` over keys and values laid out beforehand, with no
/// injection (a cross-attention's).
///
/// # Shapes
/// - `q`: `[batch, n_q, heads * head_dim]`; `kv`: from `[batch, n_kv, heads * head_dim]`
/// - output: `[batch, n_q, heads * head_dim]`
pub fn attention_over(q: Tensor<3>, kv: KeysValues, heads: usize) -> Tensor<3> {
    let (k, v) = match kv.layout {
        Layout::Tokens(k, v) => (k.into_dispatch(), v.into_dispatch()),
        Layout::PerHead(k, v) => (k.into_dispatch(), v.into_dispatch()),
    };
    Tensor::from_dispatch(<Dispatch as AttentionOps>::ditail_attention(
        q.into_dispatch(),
        k,
        v,
        QkMix::None,
        heads,
    ))
}

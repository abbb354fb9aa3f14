//! Launching `shaders/attention.wgsl` on burn's wgpu backend.
//!
//! The kernel is a WGSL template specialised per head width, key tile and storage type,
//! launched through burn-cubecl's `template` feature (`SourceKernel`) on the unfused
//! `CubeBackend` (under fusion the attention is an opaque operation that this runs when
//! the stream executes). See the shader for the algorithm.

use std::sync::Mutex;

use burn::backend::ops::FloatTensorOps;
use burn::backend::{DispatchDevice, try_read_sync};
use burn::prelude::*;
use burn::tensor::DType;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::template::{KernelSource, SourceKernel, SourceTemplate};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{CubeBackend, CubeDevice};
use cubecl::prelude::{CubeCount, CubeDim, KernelId};
use cubecl::server::KernelArguments;

use burn::backend::tensor::FloatTensor;

use super::{QkMix, cube_dims as dims};

/// Query rows per workgroup.
const ROWS: u32 = 64;
/// Most vec4s of q (and as many of the accumulator) one invocation holds; wider heads are
/// split over several invocations per row.
const MAX_DL: usize = 20;
/// Bytes of workgroup memory for one of the k and v tiles (two of them: 10 KiB, under
/// WebGPU's 16 KiB minimum).
const TILE_BYTES: usize = 5 * 1024;
/// Widest head the kernel keeps in registers.
const MAX_HEAD_DIM: usize = 256;
/// WebGPU's minimum for workgroups per dispatch dimension.
const MAX_GROUPS: usize = 65535;

/// One specialisation of the shader.
#[derive(Debug, PartialEq)]
struct AttentionWgsl {
    d4: u32,
    split: u32,
    dl: u32,
    bk: u32,
    half: bool,
}

impl AttentionWgsl {
    fn new(head_dim: usize, half: bool) -> Self {
        let d4 = head_dim / 4;
        let split = d4.div_ceil(MAX_DL);
        // As many keys as fit the tile budget, a power of two between 4 and 64.
        let fit = TILE_BYTES / (d4 * 16);
        let bk = (2..=6)
            .map(|p| 1usize << p)
            .filter(|&n| n <= fit)
            .max()
            .unwrap_or(4);
        Self {
            d4: d4 as u32,
            split: split as u32,
            dl: d4.div_ceil(split) as u32,
            bk: bk as u32,
            half,
        }
    }

    fn invocations(&self) -> u32 {
        ROWS * self.split
    }

    /// Length of the partial-score exchange (unused, so 1, without a split).
    fn part(&self) -> u32 {
        match self.split {
            1 => 1,
            s => ROWS * s * self.bk,
        }
    }
}

impl KernelSource for AttentionWgsl {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(include_str!("../../../../shaders/attention.wgsl"))
            .register("enable", if self.half { "enable f16;" } else { "" })
            .register("elem", if self.half { "f16" } else { "f32" })
            .register("d4", self.d4.to_string())
            .register("split", self.split.to_string())
            .register("dl", self.dl.to_string())
            .register("bk", self.bk.to_string())
            .register("rows", ROWS.to_string())
            .register("part", self.part().to_string())
            .register("wg", self.invocations().to_string())
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.d4, self.split, self.bk, self.half))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// Whether cubecl compiles WGSL for `device`: the template is WGSL, so it runs nowhere
/// else (SPIR-V on Vulkan and MSL on Metal take `flash.rs`'s path).
fn is_wgsl(device: &CubeDevice) -> bool {
    matches!(device, CubeDevice::Wgpu(_)) && crate::compiles_wgsl(device)
}

/// Whether the kernel compiles and computes on `device` in this storage type, found by
/// running it once on a tiny input (cached per device and type).
///
/// Only asked where cubecl compiles WGSL ([`is_wgsl`]); a driver may still reject the
/// shader, and then the next path is used rather than failing the run.
fn works_on(device: &CubeDevice, dtype: DType) -> bool {
    static SEEN: Mutex<Vec<(CubeDevice, DType, bool)>> = Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&(_, _, works)) = seen.iter().find(|(d, t, _)| d == device && *t == dtype) {
        return works;
    }
    let tensor = |values: Vec<f32>| {
        let data = TensorData::new(values, [1, 2, 4]).convert_dtype(dtype);
        CubeBackend::float_from_data(data, device)
    };
    let out = attention(
        tensor(vec![0.5, -1.0, 2.0, 0.25, 1.0, 0.0, -0.5, 1.5]),
        tensor(vec![1.0, 0.5, -0.25, 2.0, -1.0, 1.0, 0.75, 0.0]),
        tensor(vec![1.0; 8]),
        QkMix::None,
        1,
    );
    // With v all ones every output is 1, whatever the scores.
    let works = match try_read_sync(CubeBackend::float_into_data(out)) {
        Some(Ok(data)) => data
            .convert::<f32>()
            .try_to_vec::<f32>()
            .is_ok_and(|v| v.len() == 8 && v.iter().all(|x| (x - 1.0).abs() < 1e-3)),
        _ => false,
    };
    seen.push((device.clone(), dtype, works));
    works
}

fn kernel_dtype(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16)
}

fn head_dim_fits(head_dim: usize) -> bool {
    head_dim > 0 && head_dim.is_multiple_of(4) && head_dim <= MAX_HEAD_DIM
}

/// Whether the kernel runs on `device` for this storage type and head width (the probe,
/// which launches it, last).
fn runs_on(device: &CubeDevice, dtype: DType, head_dim: usize) -> bool {
    is_wgsl(device) && kernel_dtype(dtype) && head_dim_fits(head_dim) && works_on(device, dtype)
}

/// Whether a `device` (a dispatch device) runs the kernel for this dtype and head width.
pub(super) fn applies_to(device: &Device, dtype: DType, head_dim: usize) -> bool {
    match device.as_dispatch() {
        DispatchDevice::Cube(cube) => runs_on(cube, dtype, head_dim),
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// Whether the kernel takes these operands (else the caller runs the reference).
pub(super) fn supports(
    q: &CubeTensor,
    k: &CubeTensor,
    v: &CubeTensor,
    mix: &QkMix<CubeBackend>,
    heads: usize,
) -> bool {
    let (Some([b, n_q, c]), Some(kd), Some(vd)) = (dims(q), dims(k), dims(v)) else {
        return false;
    };
    let n_kv = kd[1];
    let same_dtype = |t: &CubeTensor| t.dtype == q.dtype;
    let source_fits = |t: &CubeTensor| dims(t) == Some([1, n_q, c]) && same_dtype(t);
    let mask_fits = |m: &CubeTensor| {
        let shape = m.meta.shape();
        shape.num_dims() == 1 && shape[0] == n_q && same_dtype(m)
    };
    let injection = match mix {
        QkMix::None => true,
        QkMix::InBatch => n_kv == n_q,
        QkMix::InBatchMasked(m) => n_kv == n_q && mask_fits(m),
        QkMix::Captured(sq, sk) => n_kv == n_q && source_fits(sq) && source_fits(sk),
        QkMix::CapturedMasked(sq, sk, m) => {
            n_kv == n_q && source_fits(sq) && source_fits(sk) && mask_fits(m)
        }
    };
    let shapes = kd == [b, n_kv, c] && vd == kd && n_q > 0 && n_kv > 0;
    let fits_u32 = b * n_q.max(n_kv) * c < u32::MAX as usize;
    same_dtype(k)
        && same_dtype(v)
        && heads > 0
        && c.is_multiple_of(heads)
        && shapes
        && injection
        && fits_u32
        && n_q.div_ceil(ROWS as usize) <= MAX_GROUPS
        && heads <= MAX_GROUPS
        && b <= MAX_GROUPS
        && runs_on(&q.device, q.dtype, c / heads)
}

/// Runs the kernel; [`supports`] must have said yes (the probe in [`works_on`] calls it
/// on shapes it knows fit).
pub(super) fn attention(
    q: FloatTensor<CubeBackend>,
    k: FloatTensor<CubeBackend>,
    v: FloatTensor<CubeBackend>,
    mix: QkMix<CubeBackend>,
    heads: usize,
) -> FloatTensor<CubeBackend> {
    let [b, n_q, c] = dims(&q).expect("checked by supports");
    let n_kv = dims(&k).expect("checked by supports")[1];
    let (q, k, v) = (into_contiguous(q), into_contiguous(k), into_contiguous(v));
    // Without a separate source, element 0 of q/k is the source: the same buffers bound
    // again. Without a mask the mask binding is never read; any buffer will do.
    let (source, mask, mix_from) = match mix.parts() {
        None => (None, None, b),
        Some((source, mask)) => {
            let from = if source.is_some() { 0 } else { 1 };
            (source, mask, from)
        }
    };
    let (src_q, src_k) = match source {
        Some((sq, sk)) => (into_contiguous(sq), into_contiguous(sk)),
        None => (q.clone(), k.clone()),
    };
    let use_mask = mask.is_some();
    let mask = mask.map_or_else(|| q.clone(), into_contiguous);

    let client = q.client.clone();
    let dtype = q.dtype;
    let out = CubeTensor::new_contiguous(
        client.clone(),
        q.device.clone(),
        q.meta.shape().clone(),
        client.empty(b * n_q * c * dtype.size()),
        dtype,
    );
    let head_dim = c / heads;
    let words: [u32; 8] = [
        b as u32,
        heads as u32,
        n_q as u32,
        n_kv as u32,
        (c / 4) as u32,
        mix_from as u32,
        use_mask as u32,
        (1.0 / (head_dim as f32).sqrt()).to_bits(),
    ];
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let params = client.create_from_slice(&bytes);

    let kernel = AttentionWgsl::new(head_dim, dtype == DType::F16);
    let bindings = KernelArguments::new().with_buffers(vec![
        q.handle.clone().binding(),
        k.handle.clone().binding(),
        v.handle.clone().binding(),
        src_q.handle.clone().binding(),
        src_k.handle.clone().binding(),
        mask.handle.clone().binding(),
        out.handle.clone().binding(),
        params.binding(),
    ]);
    let cube_dim = CubeDim::new_1d(kernel.invocations());
    client.launch(
        Box::new(SourceKernel::new(kernel, cube_dim)),
        CubeCount::Static(n_q.div_ceil(ROWS as usize) as u32, heads as u32, b as u32),
        bindings,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specialisations_fit_the_workgroup_memory_budget() {
        // head width: (split, dims per invocation, keys per tile)
        for (head_dim, split, dl, bk) in [
            (8, 1, 2, 64),
            (40, 1, 10, 32),
            (80, 1, 20, 16),
            (128, 2, 16, 8),
            (160, 2, 20, 8),
            (256, 4, 16, 4),
        ] {
            let k = AttentionWgsl::new(head_dim, false);
            assert_eq!(
                (k.split, k.dl, k.bk),
                (split, dl, bk),
                "head width {head_dim}"
            );
            let tiles = 2 * k.bk as usize * head_dim * 4;
            let part = if k.split > 1 {
                4 * k.part() as usize
            } else {
                0
            };
            assert!(tiles + part + 4 <= 16 * 1024, "head width {head_dim}");
            assert!(k.invocations() <= 256);
        }
    }
}

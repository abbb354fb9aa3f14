//! Helpers shared by the integration tests: fixture paths, the CPU device, and whole-tensor
//! comparison with a relative tolerance.

#![allow(dead_code)]

pub mod attention;
pub mod hash_inception;
pub mod pipeline;

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::prelude::*;
use burn_store::ModuleSnapshot;
use ditail::models::StableDiffusion;
use ditail::models::device::Backend;
use ditail::models::tensor_file::read_tensors;

/// A loading fixture (`scripts/make_loading_fixtures.py`).
pub fn loading(file: &str) -> PathBuf {
    fixtures().join("loading").join(file)
}

/// The committed fixtures (`scripts/make_fixtures.py` writes them).
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The tiny random-weight models.
pub const MODELS: [&str; 2] = ["tiny-a", "tiny-b"];

/// A tiny model's diffusers folder.
pub fn model_dir(model: &str) -> PathBuf {
    fixtures().join("models").join(model)
}

/// A golden file of a tiny model.
pub fn golden(model: &str, file: &str) -> BTreeMap<String, TensorData> {
    let path = fixtures().join("golden").join(model).join(file);
    read_tensors(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// The golden U-Net files of a model (`unet_*.safetensors`), sorted.
pub fn unet_cases(model: &str) -> Vec<String> {
    let dir = fixtures().join("golden").join(model);
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("unet_") && n.ends_with(".safetensors"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no unet_*.safetensors in {}", dir.display());
    v
}

/// The CPU device the parity tests run on.
pub fn cpu() -> Device {
    Backend::Cpu
        .device()
        .expect("the default features include the CPU backend")
}

/// burn's wgpu device (in CI: Mesa's lavapipe), checked to compute; panics with what to
/// install when there is no usable adapter.
pub fn wgpu_device() -> Device {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    let device = Backend::Wgpu
        .device()
        .expect("the default features include wgpu");
    let probe = catch_unwind(AssertUnwindSafe(|| {
        Tensor::<1>::ones([4], &device).sum().into_scalar::<f32>()
    }));
    match probe {
        Ok(v) => assert_eq!(v, 4.0, "the wgpu adapter computes 1+1+1+1 wrong"),
        Err(_) => panic!(
            "no usable wgpu adapter: install a Vulkan driver (on Debian/Ubuntu without a GPU: \
             `apt-get install mesa-vulkan-drivers libvulkan1`, as .ci/run does)"
        ),
    }
    device
}

/// How many times this process has run a GPU attention kernel: the fused WGSL kernel where
/// WGSL is compiled, burn-cubecl's flash attention where SPIR-V is (`--features vulkan`).
pub fn gpu_attention_launches() -> usize {
    use ditail::models::kernels::attention::{flash_launches, kernel_launches};
    kernel_launches() + flash_launches()
}

/// Asserts `max |got - want| <= rel_tol * max |want|` over the whole tensor, after
/// checking shapes, and returns the relative error for reporting.
pub fn assert_close(what: &str, got: &TensorData, want: &TensorData, rel_tol: f32) -> f32 {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let g: Vec<f32> = got.clone().convert::<f32>().try_to_vec::<f32>().unwrap();
    let w: Vec<f32> = want.clone().convert::<f32>().try_to_vec::<f32>().unwrap();
    let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(
        scale > 0.0,
        "{what}: the reference is all zeros, which would test nothing"
    );
    let (mut worst, mut at) = (0f32, 0usize);
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let d = (a - b).abs();
        assert!(
            d.is_finite(),
            "{what}: non-finite value at flat index {i}: got {a}, want {b}"
        );
        if d > worst {
            (worst, at) = (d, i);
        }
    }
    let rel = worst / scale;
    assert!(
        rel <= rel_tol,
        "{what}: max |got - want| = {worst:e} at flat index {at} (got {}, want {}), {rel:e} of max |want| = {scale:e}; tolerance {rel_tol:e}",
        g[at],
        w[at]
    );
    rel
}

/// The golden name of a site: its diffusers path without the `.attn1` of self-attention
/// (`up_blocks.1.attentions.2.transformer_blocks.0`); the SD1.x fixtures, made when a
/// transformer had one block, leave out `.transformer_blocks.0`.
fn golden_site_key(
    site: ditail::models::hook::Site,
    golden: &BTreeMap<String, TensorData>,
    prefix: &str,
    suffix: &str,
) -> String {
    let path = site.diffusers_path();
    let full = format!("{prefix}{}{suffix}", path.trim_end_matches(".attn1"));
    let short = format!(
        "{prefix}{}{suffix}",
        path.trim_end_matches(".transformer_blocks.0.attn1")
    );
    if golden.contains_key(&full) {
        full
    } else {
        short
    }
}

/// Compares every SD1.x Ditail site a recorder captured with the golden tensors named
/// `{prefix}{site path}` (conv) and `{prefix}{site path}.q` / `.k` (attention).
pub fn assert_sites(
    label: &str,
    rec: &ditail::models::Recorder,
    golden: &BTreeMap<String, TensorData>,
    prefix: &str,
    rel_tol: f32,
) {
    let sites = ditail::models::hook::Site::ditail_sites();
    assert_these_sites(label, &sites, rec, golden, prefix, rel_tol);
}

/// Compares the given sites a recorder captured with the golden tensors (see
/// [`assert_sites`]).
pub fn assert_these_sites(
    label: &str,
    sites: &[ditail::models::hook::Site],
    rec: &ditail::models::Recorder,
    golden: &BTreeMap<String, TensorData>,
    prefix: &str,
    rel_tol: f32,
) {
    use ditail::models::hook::Captured;
    assert_eq!(
        rec.captured.len(),
        sites.len(),
        "{label}: all {} sites are visited",
        sites.len()
    );
    for &site in sites {
        let want = |suffix: &str| {
            let key = golden_site_key(site, golden, prefix, suffix);
            golden
                .get(&key)
                .unwrap_or_else(|| panic!("{label}: fixture has no {key}"))
                .clone()
        };
        let path = site.diffusers_path();
        match &rec.captured[&site] {
            Captured::Resnet(h) => {
                assert_close(
                    &format!("{label} {path}"),
                    &h.clone().into_data(),
                    &want(""),
                    rel_tol,
                );
            }
            Captured::SelfAttn { q, k } => {
                assert_close(
                    &format!("{label} {path}.q"),
                    &q.clone().into_data(),
                    &want(".q"),
                    rel_tol,
                );
                assert_close(
                    &format!("{label} {path}.k"),
                    &k.clone().into_data(),
                    &want(".k"),
                    rel_tol,
                );
            }
        }
    }
}

/// Every parameter of a module, by name, as f32.
pub fn params<M: ModuleSnapshot>(m: &M) -> BTreeMap<String, Vec<f32>> {
    m.collect(None, None, true)
        .into_iter()
        .map(|t| {
            let name = t.name.clone();
            let bytes = t.into_bytes().unwrap();
            let values = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (name, values)
        })
        .collect()
}

/// Asserts two models hold the same parameters after `round` is applied to the reference.
pub fn assert_same(
    label: &str,
    got: &StableDiffusion,
    want: &StableDiffusion,
    round: impl Fn(f32) -> f32,
) {
    for (part, g, w) in [
        ("unet", params(&got.unet), params(&want.unet)),
        ("vae", params(&got.vae), params(&want.vae)),
        (
            "text_encoder",
            params(&got.text_encoder),
            params(&want.text_encoder),
        ),
    ] {
        assert_eq!(
            g.keys().collect::<Vec<_>>(),
            w.keys().collect::<Vec<_>>(),
            "{label} {part}: parameter names"
        );
        for (name, values) in &w {
            let expect: Vec<f32> = values.iter().map(|&v| round(v)).collect();
            assert_eq!(g[name], expect, "{label} {part}.{name}");
        }
    }
}

/// A module's parameters under PyTorch's names and layouts (as the expected files hold them).
pub fn torch_params<M: burn_store::ModuleSnapshot>(m: &M) -> BTreeMap<String, Vec<f32>> {
    m.collect(None, Some(Box::new(burn_store::BurnToPyTorchAdapter)), true)
        .into_iter()
        .map(|t| {
            let name = t.name.clone();
            let b = t.into_bytes().unwrap();
            let values = b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (name, values)
        })
        .collect()
}

/// The fused weights diffusers computed (`expected`, a loading fixture: `unet.*` /
/// `text_encoder.*` / SDXL's `text_encoder_2.*`, PyTorch layout) against the merged model's
/// (1e-5 of each tensor's largest value), for the weights the LoRAs change; every other
/// weight must equal `base`'s.
pub fn assert_merged(label: &str, got: &StableDiffusion, base: &StableDiffusion, expected: &str) {
    let want = read_tensors(&loading(expected)).unwrap();
    let mut parts = vec![
        ("unet.", torch_params(&got.unet), torch_params(&base.unet)),
        (
            "text_encoder.",
            torch_params(&got.text_encoder),
            torch_params(&base.text_encoder),
        ),
    ];
    if let (Some(g), Some(b)) = (&got.text_encoder_2, &base.text_encoder_2) {
        parts.push((
            "text_encoder_2.",
            torch_params(&g.model),
            torch_params(&b.model),
        ));
    }
    let mut checked = 0;
    for (prefix, g, b) in parts {
        for (name, values) in &g {
            match want.get(&format!("{prefix}{name}")) {
                Some(w) => {
                    let w: Vec<f32> = w.clone().convert::<f32>().try_to_vec().unwrap();
                    let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let err = values
                        .iter()
                        .zip(&w)
                        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                    assert!(
                        err <= 1e-5 * scale,
                        "{label} {prefix}{name}: max err {err:e} (scale {scale})"
                    );
                    assert_ne!(
                        values, &b[name],
                        "{label} {prefix}{name}: the LoRA changed nothing"
                    );
                    checked += 1;
                }
                None => assert_eq!(
                    values, &b[name],
                    "{label} {prefix}{name} changed but no LoRA targets it"
                ),
            }
        }
    }
    assert_eq!(
        checked,
        want.len(),
        "{label}: every expected weight exists in the model"
    );
}

/// Runs the components of the diffusers folder `model` on the golden tensors named
/// `inputs` and compares every output named in `outputs` with the golden one (relative
/// tolerance `tol`, see [`assert_close`]), printing each error.
pub fn check_components(
    label: &str,
    model: &std::path::Path,
    golden: &BTreeMap<String, TensorData>,
    inputs: &[&str],
    outputs: &[&str],
    opts: ditail::models::LoadOptions,
    tol: f32,
) {
    let inputs = inputs
        .iter()
        .map(|k| (k.to_string(), golden[*k].clone()))
        .collect();
    let out = ditail_golden::run_components(model, &inputs, &cpu(), opts).unwrap();
    for key in outputs {
        let rel = assert_close(&format!("{label} {key}"), &out[*key], &golden[*key], tol);
        eprintln!("{label} {key}: rel err {rel:e}");
    }
}

/// The SDXL text-encoder golden file's inputs (both tokenizers' ids) and the outputs checked
/// (`scripts/make_sdxl_fixtures.py`, tiny and full size).
pub const SDXL_TEXT_INPUTS: &[&str] = &["input_ids", "input_ids_2"];
/// See [`SDXL_TEXT_INPUTS`].
pub const SDXL_TEXT_OUTPUTS: &[&str] = &[
    "text_embeddings",
    "text_embeddings_skip1",
    "pooled_text_embeds",
];

/// A conditioning prepared for a run's steps (`UNet2DConditionModel::prepare`) gives the
/// plain forward's prediction to the bit, on the first step, which projects and keeps the
/// cross-attention's keys and values, and on a later one, which reads them; and so does one
/// prepared with the run's timesteps (`for_timesteps`, `t` among others), whose first step
/// makes the time embeddings of them all and whose later steps read their rows: to the bit
/// where the CPU's products are the 512-bit GEMM, which sums each row alike however many
/// there are, else within 1e-5 of the largest value (another GEMM may sum a product of 1
/// row in another order than one of several).
pub fn assert_prepared_alike(
    unet: &ditail::models::UNet2DConditionModel,
    sample: &Tensor<4>,
    t: f32,
    cond: impl Into<ditail::models::Conditioning>,
    plain: &Tensor<4>,
) {
    let cond = cond.into();
    let run = [t + 40.0, t, (t - 20.0).max(0.0) + 0.5];
    let prepared = [
        (unet.prepare(cond.clone()), "prepared"),
        (
            unet.prepare(cond).for_timesteps(&run),
            "prepared for its timesteps",
        ),
    ];
    let exact = ditail::models::kernels::linear::kernel_enabled();
    for (i, (prepared, what)) in prepared.iter().enumerate() {
        for step in ["first", "later"] {
            let out = prepared.forward(sample.clone(), t, &mut ditail::models::NoControl);
            let (got, want) = (out.into_data(), plain.clone().into_data());
            match i == 0 || exact {
                true => assert_eq!(got, want, "{step} forward, {what}"),
                false => {
                    assert_close(&format!("{step} forward, {what}"), &got, &want, 1e-5);
                }
            }
        }
        assert!(
            !prepared.keys_values().is_empty(),
            "{what}: no keys or values kept"
        );
    }
    assert_eq!(prepared[0].0.time_projections(), 0);
    assert!(
        prepared[1].0.time_projections() > 0,
        "no time projections kept"
    );
}

//! Helpers of the pipeline tests (SD1.x and SDXL): tamed models, stored tensors, a
//! controller that records what the attention sees after another controller acted, the
//! fixtures' scenarios, and the step-by-step checks both families' references share.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use burn::prelude::*;
use ditail::models::hook::{Controller, Recorder, SelfAttnQk, Site};
use ditail::models::{Conditioning, Family, LoadOptions};
use ditail::pipeline::inject::{InjectionSites, Injector, Windows};
use ditail::pipeline::steps::{SamplingEmbeddings, StepParams, inversion_step, sampling_step};
use ditail::pipeline::{InversionSettings, Mask, Model, ModelSpec, SamplingSettings};
use serde_json::Value;

use super::{assert_close, assert_these_sites, model_dir};

/// A tiny model with its U-Net's `conv_out` scaled by 0.1, as the references tame it.
pub fn tame_as(name: &str, device: &Device, opts: LoadOptions) -> Model {
    let spec = ModelSpec::new(model_dir(name).to_str().unwrap());
    let mut m = Model::load(&spec, device, opts).unwrap();
    let conv = &mut m.sd_mut().unet.conv_out;
    conv.weight = conv.weight.clone().map(|w| w * 0.1);
    conv.bias = conv.bias.clone().map(|b| b.map(|b| b * 0.1));
    m
}

/// A stored tensor, by key.
pub fn tensor<const D: usize>(
    g: &BTreeMap<String, TensorData>,
    key: &str,
    device: &Device,
) -> Tensor<D> {
    Tensor::from_data(
        g.get(key)
            .unwrap_or_else(|| panic!("fixture key {key}"))
            .clone(),
        device,
    )
}

/// [`assert_close`] on a tensor.
pub fn check<const D: usize>(what: &str, got: &Tensor<D>, want: &TensorData, tol: f32) -> f32 {
    assert_close(what, &got.clone().into_data(), want, tol)
}

/// Records tensors after another controller has acted on them.
pub struct After<'a, C: Controller>(pub C, pub &'a mut Recorder);

impl<C: Controller> Controller for After<'_, C> {
    fn resnet(&mut self, at: Site, h: Tensor<4>) -> Tensor<4> {
        let h = self.0.resnet(at, h);
        self.1.resnet(at, h)
    }
    /// Records the q and k the attention sees: the injection resolved as the reference
    /// does it.
    fn self_attn(&mut self, at: Site, grid: [usize; 2], qk: SelfAttnQk) -> SelfAttnQk {
        let qk = self.0.self_attn(at, grid, qk);
        let (q, k) = qk.clone().resolved();
        self.1.self_attn(at, grid, SelfAttnQk::new(q, k));
        qk
    }
}

/// One Ditail scenario of a pipeline fixture's `meta.json`.
pub struct Scenario {
    /// Its tensors' file, beside `meta.json`.
    pub file: String,
    /// The inversion's settings (working size 64, as the references use).
    pub inv: InversionSettings,
    /// The sampling's settings.
    pub spl: SamplingSettings,
    /// The working image's `[height, width]` when the fixture records it (SDXL's).
    pub hw: Option<[usize; 2]>,
}

/// Reads scenario `name`, checking that its injection windows are the ones it recorded.
pub fn scenario(meta: &Value, name: &str) -> Scenario {
    let s = &meta["ditail"]["scenarios"][name]["settings"];
    let f = |k: &str| s[k].as_f64().unwrap();
    let mut inv = InversionSettings::new(s["inversion_prompts"]["pos"].as_str().unwrap());
    inv.negative_prompt = s["inversion_prompts"]["neg"].as_str().unwrap().into();
    inv.alpha = f("alpha");
    inv.beta = f("beta");
    inv.steps = s["n_inv"].as_u64().unwrap() as usize;
    inv.size = 64;
    let mut spl = SamplingSettings::new(s["sampling_prompts"]["pos"].as_str().unwrap());
    spl.negative_prompt = s["sampling_prompts"]["neg"].as_str().unwrap().into();
    spl.omega = f("omega");
    spl.steps = s["n_spl"].as_u64().unwrap() as usize;
    spl.conv_ratio = f("conv_ratio");
    spl.attn_ratio = f("attn_ratio");
    spl.mask = Mask::parse(s["mask"].as_str().unwrap()).unwrap();
    spl.no_injection = !s["inject"].as_bool().unwrap();
    assert_eq!(
        spl.window_steps(),
        if spl.no_injection {
            (0, 0)
        } else {
            (
                s["conv_steps"].as_u64().unwrap() as usize,
                s["attn_steps"].as_u64().unwrap() as usize,
            )
        }
    );
    let hw = s
        .get("working_size_hw")
        .map(|v| serde_json::from_value::<[usize; 2]>(v.clone()).unwrap());
    Scenario {
        file: meta["ditail"]["scenarios"][name]["file"]
            .as_str()
            .unwrap()
            .into(),
        inv,
        spl,
        hw,
    }
}

/// The method's sites for a family.
pub fn sites(family: Family) -> &'static InjectionSites {
    static SD1: LazyLock<InjectionSites> =
        LazyLock::new(|| InjectionSites::default_for(Family::Sd1));
    static XL: LazyLock<InjectionSites> =
        LazyLock::new(|| InjectionSites::default_for(Family::Sdxl));
    match family {
        Family::Sd1 => &SD1,
        Family::Sdxl => &XL,
    }
}

/// The parameters of sampling step `i` (timestep `t`) of `spl` on `model`'s scheduler,
/// with the source kept in the batch as the references do.
pub fn step_params<'a>(
    model: &Model,
    spl: &'a SamplingSettings,
    i: usize,
    t: i64,
    sites: &'a InjectionSites,
) -> StepParams<'a> {
    let ratio = model.scheduler().step_ratio(spl.steps);
    let (conv_steps, attn_steps) = spl.window_steps();
    StepParams {
        t,
        alpha_t: model.scheduler().alpha(t),
        alpha_prev: model.scheduler().alpha(t - ratio),
        omega: spl.omega,
        windows: Windows {
            conv: i < conv_steps,
            attn: i < attn_steps,
        },
        mask: &spl.mask,
        sites,
        always_batch_source: true,
    }
}

/// Every inversion step of `steps` from the fixture's previous latent (`z0`, then
/// `inverted.{t}`) under `cond`: `inv_eps.{t}` and `inverted.{t}` within `tol`.
pub fn check_inversion_steps(
    name: &str,
    model: &Model,
    g: &BTreeMap<String, TensorData>,
    cond: &Conditioning,
    steps: usize,
    tol: f32,
) {
    let device = model.sd().unet.conv_in.weight.val().device();
    let mut ts = model.scheduler().timesteps(steps).unwrap();
    ts.sort_unstable();
    let mut prev = (
        tensor::<4>(g, "z0", &device),
        model.scheduler().final_alpha_cumprod(),
    );
    // Prepared once, as a run does: the steps after the first read the cross-attention's
    // keys and values the first projected.
    let cond = model.sd().unet.prepare(cond.clone());
    for &t in &ts {
        let alpha_t = model.scheduler().alpha(t);
        let (z, eps) = inversion_step(&cond, prev.0, t, prev.1, alpha_t);
        check(
            &format!("{name} inv_eps.{t}"),
            &eps,
            &g[&format!("inv_eps.{t}")],
            tol,
        );
        check(
            &format!("{name} inverted.{t}"),
            &z,
            &g[&format!("inverted.{t}")],
            tol,
        );
        prev = (tensor(g, &format!("inverted.{t}"), &device), alpha_t);
    }
}

/// Every sampling step of `sc` from the fixture's input latent (`step.{i}.x_in`, the
/// source `inverted.{t}`), the source kept in the batch: the timestep, `noise_pred`, `eps`
/// and `x_out` within `tol`, and at step 0 what every injected site saw
/// (`step.0.injected.*`).
pub fn check_sampling_steps(
    name: &str,
    model: &Model,
    g: &BTreeMap<String, TensorData>,
    spl: &SamplingSettings,
    emb: &SamplingEmbeddings,
    sites: &InjectionSites,
    tol: f32,
) {
    let device = model.sd().unet.conv_in.weight.val().device();
    let timesteps = model.scheduler().timesteps(spl.steps).unwrap();
    let cond = emb.clone().prepare(&model.sd().unet);
    for (i, &t) in timesteps.iter().enumerate() {
        let stored_t: Vec<i64> = g[&format!("step.{i}.t")]
            .clone()
            .convert::<i64>()
            .try_to_vec()
            .unwrap();
        assert_eq!(stored_t, [t], "{name} step {i}");
        let params = step_params(model, spl, i, t, sites);
        let x_in = tensor::<4>(g, &format!("step.{i}.x_in"), &device);
        let source = tensor::<4>(g, &format!("inverted.{t}"), &device);
        let out = sampling_step(&cond, x_in.clone(), source.clone(), params);
        for (key, got) in [
            ("noise_pred", &out.noise_pred),
            ("eps", &out.eps),
            ("x_out", &out.x),
        ] {
            check(
                &format!("{name} step.{i}.{key}"),
                got,
                &g[&format!("step.{i}.{key}")],
                tol,
            );
        }
        if i == 0 {
            let all: Vec<Site> = sites.all().collect();
            let mut rec = Recorder::sites(all.clone());
            let latents = Tensor::cat(vec![source, x_in.clone(), x_in], 0);
            let context = Conditioning::cat(vec![
                emb.uncond.clone(),
                emb.positive.clone(),
                emb.negative.clone(),
            ]);
            let injector = Injector::new(sites, &spl.mask, params.windows);
            model
                .sd()
                .unet
                .forward(latents, t as f32, context, &mut After(injector, &mut rec));
            assert_these_sites(name, &all, &rec, g, "step.0.injected.", tol);
        }
    }
}

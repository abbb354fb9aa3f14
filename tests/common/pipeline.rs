//! Helpers of the pipeline tests (SD1.x and SDXL): tamed models, stored tensors, and a
//! controller that records what the attention sees after another controller acted.

use std::collections::BTreeMap;

use burn::prelude::*;
use ditail::models::LoadOptions;
use ditail::models::hook::{Controller, Recorder, SelfAttnQk, Site};
use ditail::pipeline::{Model, ModelSpec};

use super::{assert_close, model_dir};

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

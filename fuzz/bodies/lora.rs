//! LoRA files (kohya/A1111, LoCon, PEFT, diffusers): `LoraSet::open` (header, key formats,
//! pairs, ranks, alphas), matching against the tiny test model's weights
//! (`tests/fixtures/models/tiny-a`, planned once) with the shape checks
//! (`attach`, `check_all_used`), then, for a LoRA that fits, the merge into every weight it
//! touches as loading does it.

use std::sync::OnceLock;

use ditail::models::StableDiffusion;
use ditail::models::load::lora::{LoraSet, LoraSpec};
use ditail::models::load::{Component, LoadOptions, Source};

type Sources = Vec<(String, Source)>;

/// tiny-a's text encoder and U-Net tensors as `plan_diffusers` lists them, before LoRAs.
fn base() -> &'static (Sources, Sources) {
    static BASE: OnceLock<(Sources, Sources)> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = super::repo_root().join("tests/fixtures/models/tiny-a");
        let plan = StableDiffusion::plan_diffusers(&dir, LoadOptions::default(), &[])
            .expect("tiny-a plans");
        (plan.text.sources, plan.unet.sources)
    })
}

pub fn run(data: &[u8]) {
    let path = super::input_file("lora.safetensors", data);
    let spec = LoraSpec { path, scale: 0.7 };
    let Ok(mut set) = LoraSet::open(&[spec]) else {
        return;
    };
    let (text, unet) = base();
    let (mut text, mut unet) = (text.clone(), unet.clone());
    // As `plan_diffusers` and `plan_single_file` attach them.
    set.attach(Component::TextEncoder, &mut text);
    set.attach(Component::Unet, &mut unet);
    if set.check_all_used().is_ok() {
        let merged = text
            .into_iter()
            .chain(unet)
            .filter(|(_, s)| !s.lora.is_empty())
            .collect();
        super::draw(merged);
    }
}

//! Single-file checkpoints (Civitai / A1111 `.safetensors`): header and tensor table
//! (`WeightFile::open`), architecture detection, the LDM-to-diffusers key mapping and the
//! plan (`plan_single_file`, `plan_vae_file`), a diffusers folder's view of the same file
//! (`folder_sources`), then every planned tensor converted as loading converts it.

use ditail::models::load::{self, Component, SingleFileConfigs, WeightFile};

pub fn run(data: &[u8]) {
    let path = super::input_file("model.safetensors", data);
    let configs = SingleFileConfigs::default();
    if let Ok(plan) = load::plan_single_file(&path, &configs, &[]) {
        super::draw(plan.text.sources);
        super::draw(plan.unet.sources);
        super::draw(plan.vae.weights.sources);
    }
    if let Ok(vae) = load::plan_vae_file(&path, &configs.vae) {
        super::draw(vae.weights.sources);
    }
    if let Ok(file) = WeightFile::open(&path) {
        for entry in file.tensors() {
            // The header's ranges are what `raw` slices the map with.
            let _ = file.raw(entry);
        }
        for component in [Component::TextEncoder, Component::Vae, Component::Unet] {
            super::draw(load::folder_sources(std::slice::from_ref(&file), component));
        }
    }
}

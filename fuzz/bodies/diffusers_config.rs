//! A diffusers folder's text files: `config.json` through the U-Net, VAE and text encoder
//! parsers, `scheduler_config.json` through the scheduler's (then the DDIM schedule built
//! and walked as inversion and sampling walk it), and a sharded `*.index.json`'s weight map
//! (`WeightFiles::find`). The tokenizer's files are `tokenizer_files`.

use std::collections::BTreeMap;
use std::path::Path;

use ditail::models::json::JsonConfig;
use ditail::models::load::WeightFiles;
use ditail::models::{ClipTextConfig, UNetConfig, VaeConfig};
use ditail::pipeline::scheduler::{Ddim, SchedulerConfig};

/// Builds the schedule and takes, for a few step counts, every timestep and the `ā` values
/// a run reads at it: all must be finite.
fn schedule(config: SchedulerConfig) {
    let t_max = config.num_train_timesteps;
    let ddim = Ddim::new(config);
    assert_eq!(ddim.alphas_cumprod().len(), t_max);
    assert!(ddim.final_alpha_cumprod().is_finite());
    for n in [1, 2, 10, 50, 100, t_max] {
        let Ok(timesteps) = ddim.timesteps(n) else {
            continue;
        };
        let ratio = ddim.step_ratio(n);
        for t in timesteps {
            let (a, prev) = (ddim.alpha(t), ddim.alpha(t - ratio));
            assert!(
                a.is_finite() && prev.is_finite(),
                "alpha({t}) = {a}, alpha({}) = {prev}",
                t - ratio
            );
        }
    }
}

pub fn run(data: &[u8]) {
    // `JsonConfig::read` and `ClipTokenizer::from_dir` read files as UTF-8 text.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(j) = JsonConfig::parse(Path::new("config.json"), text) else {
        return;
    };
    let _ = UNetConfig::from_json(&j);
    let _ = VaeConfig::from_json(&j);
    let _ = ClipTextConfig::from_json(&j);
    if let Ok(config) = SchedulerConfig::from_json(&j) {
        schedule(config);
    }
    if j.raw("weight_map").is_some() {
        let dir = super::scratch().join("index");
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join("model.safetensors.index.json"), data);
        let _ = WeightFiles::find(&dir, "model", "weights", burn::tensor::FloatDType::F32);
        let _: Result<BTreeMap<String, String>, _> = j.get("weight_map", BTreeMap::new());
    }
}

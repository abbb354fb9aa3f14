//! The golden-tensor harness of ditail's parity tests (a development crate, not part of the
//! engine): runs a diffusers-format model's components on named input tensors and returns
//! named outputs, the exchange format of `examples/components.rs` and of the golden
//! fixtures that `scripts/` writes with diffusers.
//!
//! | inputs present | component | output |
//! |---|---|---|
//! | `input_ids` (i64/i32 `[B, 77]`) | text encoder (SD1.x) | `text_embeddings`, `text_embeddings_penultimate` |
//! | `input_ids`, `input_ids_2` | both text encoders (SDXL) | `text_embeddings` (the penultimate states side by side), `text_embeddings_skip1` (one layer earlier), `pooled_text_embeds` |
//! | `image` (f32 `[B, 3, H, W]` in [-1, 1]) | VAE encoder | `posterior_mean` (unscaled) |
//! | `latents` (f32 `[B, 4, h, w]`) | VAE decoder | `decoded` |
//! | `sample`, `timestep` (`[1]`), `encoder_hidden_states` (SDXL: and `text_embeds`, `time_ids`) | U-Net | `noise_pred` |

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use burn::tensor::DType;

use ditail_models::error::{ModelError, Result};
use ditail_models::hook::NoControl;
use ditail_models::load::{LoadOptions, load_text_encoder, load_unet, load_vae};
use ditail_models::unet::{AddedConditioning, Conditioning};

/// An input tensor, in the float type the networks are loaded as.
fn input<const D: usize>(
    inputs: &BTreeMap<String, TensorData>,
    name: &str,
    device: &Device,
    opts: LoadOptions,
) -> Result<Option<Tensor<D>>> {
    let Some(data) = inputs.get(name) else {
        return Ok(None);
    };
    check_rank(name, data, D)?;
    Ok(Some(
        Tensor::<D>::from_data(data.clone().convert::<f32>(), device).cast(opts.dtype),
    ))
}

fn check_rank(name: &str, data: &TensorData, rank: usize) -> Result<()> {
    if data.shape().len() != rank {
        return Err(ModelError::InvalidInput {
            name: name.into(),
            reason: format!("expected {rank} dimensions, found shape {:?}", data.shape()),
        });
    }
    Ok(())
}

/// Token ids checked against the encoder's vocabulary.
fn token_ids(
    name: &str,
    ids: &TensorData,
    config: &ditail_models::ClipTextConfig,
    device: &Device,
) -> Result<Tensor<2, Int>> {
    check_rank(name, ids, 2)?;
    if !matches!(ids.dtype(), DType::I64 | DType::I32) {
        return Err(ModelError::InvalidInput {
            name: name.into(),
            reason: format!("expected i64 or i32 token ids, found {:?}", ids.dtype()),
        });
    }
    let values = ids.clone().convert::<i64>();
    if let Some(bad) = values
        .iter::<i64>()
        .find(|&v| v < 0 || v as usize >= config.vocab_size)
    {
        return Err(ModelError::InvalidInput {
            name: name.into(),
            reason: format!(
                "token id {bad} is outside the vocabulary of {}",
                config.vocab_size
            ),
        });
    }
    Ok(Tensor::<2, Int>::from_data(values, device))
}

fn output<const D: usize>(t: Tensor<D>) -> TensorData {
    t.into_data().convert::<f32>()
}

/// Runs every component whose inputs are present in `inputs`, loading only those
/// components from `model_dir`.
pub fn run_components(
    model_dir: &Path,
    inputs: &BTreeMap<String, TensorData>,
    device: &Device,
    opts: LoadOptions,
) -> Result<BTreeMap<String, TensorData>> {
    let mut out = BTreeMap::new();

    if let Some(ids) = inputs.get("input_ids") {
        let second = model_dir.join("text_encoder_2");
        let (encoder, config) = load_text_encoder(&model_dir.join("text_encoder"), device, opts)?;
        let ids = token_ids("input_ids", ids, &config, device)?;
        if second.is_dir() {
            let Some(ids_2) = inputs.get("input_ids_2") else {
                return Err(ModelError::InvalidInput {
                    name: "input_ids_2".into(),
                    reason:
                        "an SDXL model has two text encoders: give the second tokenizer's ids too"
                            .into(),
                });
            };
            let (encoder_2, config_2) = load_text_encoder(&second, device, opts)?;
            let ids_2 = token_ids("input_ids_2", ids_2, &config_2, device)?;
            for (name, skip) in [("text_embeddings", 1), ("text_embeddings_skip1", 2)] {
                let (h1, _) = encoder.forward_xl(ids.clone(), skip)?;
                let (h2, pooled) = encoder_2.forward_xl(ids_2.clone(), skip)?;
                out.insert(name.into(), output(Tensor::cat(vec![h1, h2], 2)));
                if let (Some(pooled), 1) = (pooled, skip) {
                    out.insert("pooled_text_embeds".into(), output(pooled));
                }
            }
        } else {
            out.insert(
                "text_embeddings".into(),
                output(encoder.forward(ids.clone(), 0)?),
            );
            out.insert(
                "text_embeddings_penultimate".into(),
                output(encoder.forward(ids, 1)?),
            );
        }
    }

    let image = input::<4>(inputs, "image", device, opts)?;
    let latents = input::<4>(inputs, "latents", device, opts)?;
    if image.is_some() || latents.is_some() {
        let (vae, _) = load_vae(&model_dir.join("vae"), device, opts)?;
        if let Some(image) = image {
            let [_, c, h, w] = image.dims();
            if c != 3 || h % 8 != 0 || w % 8 != 0 {
                return Err(ModelError::InvalidInput {
                    name: "image".into(),
                    reason: format!(
                        "expected [B, 3, H, W] with H and W multiples of 8, found {:?}",
                        image.dims()
                    ),
                });
            }
            out.insert("posterior_mean".into(), output(vae.encode_mean(image)));
        }
        if let Some(latents) = latents {
            out.insert("decoded".into(), output(vae.decode(latents)));
        }
    }

    let sample = input::<4>(inputs, "sample", device, opts)?;
    let context = input::<3>(inputs, "encoder_hidden_states", device, opts)?;
    let timestep = inputs.get("timestep");
    match (sample, timestep, context) {
        (Some(sample), Some(t), Some(context)) => {
            let t = t.clone().convert::<f32>();
            let values: Vec<f32> = t.iter::<f32>().collect();
            let Some(&first) = values
                .first()
                .filter(|_| values.iter().all(|&v| v == values[0]))
            else {
                return Err(ModelError::InvalidInput {
                    name: "timestep".into(),
                    reason: format!("expected one timestep (shape [1]), found {values:?}"),
                });
            };
            if sample.dims()[0] != context.dims()[0] {
                return Err(ModelError::InvalidInput {
                    name: "encoder_hidden_states".into(),
                    reason: format!(
                        "batch {} differs from the sample's {}",
                        context.dims()[0],
                        sample.dims()[0]
                    ),
                });
            }
            let (unet, _) = load_unet(&model_dir.join("unet"), device, opts)?;
            let mut cond = Conditioning::from(context);
            if unet.has_added_conditioning() {
                let text_embeds = input::<2>(inputs, "text_embeds", device, opts)?;
                let time_ids = input::<2>(inputs, "time_ids", device, opts)?;
                let (Some(text_embeds), Some(time_ids)) = (text_embeds, time_ids) else {
                    return Err(ModelError::InvalidInput {
                        name: "text_embeds, time_ids".into(),
                        reason: "an SDXL U-Net also needs the pooled text embedding and the six size numbers".into(),
                    });
                };
                let b = cond.batch();
                if text_embeds.dims()[0] != b || time_ids.dims() != [b, 6] {
                    return Err(ModelError::InvalidInput {
                        name: "text_embeds, time_ids".into(),
                        reason: format!(
                            "expected [{b}, pooled] and [{b}, 6], found {:?} and {:?}",
                            text_embeds.dims(),
                            time_ids.dims()
                        ),
                    });
                }
                cond.added = Some(AddedConditioning {
                    text_embeds,
                    time_ids,
                });
            }
            out.insert(
                "noise_pred".into(),
                output(unet.forward(sample, first, cond, &mut NoControl)),
            );
        }
        (None, None, None) => {}
        (s, t, c) => {
            let missing: Vec<&str> = [
                ("sample", s.is_none()),
                ("timestep", t.is_none()),
                ("encoder_hidden_states", c.is_none()),
            ]
            .into_iter()
            .filter_map(|(n, m)| m.then_some(n))
            .collect();
            return Err(ModelError::InvalidInput {
                name: missing.join(", "),
                reason: "the U-Net needs sample, timestep and encoder_hidden_states together"
                    .into(),
            });
        }
    }
    Ok(out)
}

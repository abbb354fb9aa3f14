//! The LDM / A1111 single-file layout (and SDXL's, Stability's `sgm`): which checkpoints are
//! SD1.x or SDXL, and the one mapping table from LDM key names onto the model's own
//! (diffusers) names.
//!
//! Layout as documented by diffusers' [`loaders/single_file_utils.py`](https://github.com/huggingface/diffusers/blob/dbbfe89b9297c416ad1037e80f13e3fa7a7f8d34/src/diffusers/loaders/single_file_utils.py).
//!
//! | LDM | diffusers |
//! |---|---|
//! | `model.diffusion_model.time_embed.{0,2}` | `time_embedding.linear_{1,2}` |
//! | `…input_blocks.0.0` | `conv_in` |
//! | `…input_blocks.{1+b(L+1)+j}.0` / `.1` | `down_blocks.b.resnets.j` / `.attentions.j` |
//! | `…input_blocks.{(b+1)(L+1)}.0.op` | `down_blocks.b.downsamplers.0.conv` |
//! | `…middle_block.{0,1,2}` | `mid_block.resnets.0`, `.attentions.0`, `.resnets.1` |
//! | `…output_blocks.{b(L+1)+j}.0` / `.1` | `up_blocks.b.resnets.j` / `.attentions.j` |
//! | `…output_blocks.{b(L+1)+L}.{1,2}.conv` (last) | `up_blocks.b.upsamplers.0.conv` |
//! | `…out.{0,2}` | `conv_norm_out`, `conv_out` |
//! | ResNet `in_layers.{0,2}`, `emb_layers.1`, `out_layers.{0,3}`, `skip_connection` | `norm1`, `conv1`, `time_emb_proj`, `norm2`, `conv2`, `conv_shortcut` |
//! | `first_stage_model.{encoder,decoder}.{down,up}.i.block.j` | `…down_blocks.i.resnets.j` (decoder `up` reversed) |
//! | `….{down,up}.i.{downsample,upsample}.conv` | `…{downsamplers,upsamplers}.0.conv` |
//! | `….mid.{block_1,attn_1,block_2}`, `norm_out` | `mid_block.{resnets.0,attentions.0,resnets.1}`, `conv_norm_out` |
//! | VAE attention `norm`, `q`, `k`, `v`, `proj_out` (1x1 convs), ResNet `nin_shortcut` | `group_norm`, `to_q`, `to_k`, `to_v`, `to_out.0` (linears), `conv_shortcut` |
//! | `cond_stage_model.transformer.[text_model.]X` | `text_model.X` |
//! | SDXL: `model.diffusion_model.label_emb.0.{0,2}` | `add_embedding.linear_{1,2}` |
//! | SDXL: `conditioner.embedders.0.transformer.[text_model.]X` | first text encoder's `text_model.X` |
//! | SDXL: `conditioner.embedders.1.model.X` (OpenCLIP names) | second text encoder, see [`openclip_key`] |
//!
//! Transformer blocks inside the U-Net keep their names (SDXL's too: more of them, linear
//! `proj_in`/`proj_out`). `L` is `layers_per_block`.

use super::Component;

/// What a checkpoint file holds, judged from its keys and shapes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Architecture {
    /// Stable Diffusion 1.x (loadable).
    Sd1,
    /// Stable Diffusion XL base (loadable).
    Sdxl,
    /// Something else, named for the error message.
    Unsupported(String),
}

/// Classifies a single-file checkpoint from its keys and the shape lookup `shape`.
pub(crate) fn detect<'a>(
    keys: impl Iterator<Item = &'a str> + Clone,
    shape: impl Fn(&str) -> Option<Vec<usize>>,
) -> Architecture {
    let any = |pat: &str| keys.clone().any(|k| k.contains(pat));
    let unsupported = |s: &str| Architecture::Unsupported(s.to_string());
    if any("double_blocks.") || any("single_blocks.") {
        return unsupported("Flux");
    }
    if any("joint_blocks.") {
        return unsupported("Stable Diffusion 3");
    }
    if any("conditioner.embedders.0.model.") {
        return unsupported("the SDXL refiner (one OpenCLIP text encoder)");
    }
    if any("conditioner.embedders.1.model.") {
        if !any("conditioner.embedders.0.transformer.") {
            return unsupported("SDXL without its first (CLIP ViT-L) text encoder");
        }
        return match shape("model.diffusion_model.input_blocks.0.0.weight")
            .and_then(|s| s.get(1).copied())
        {
            Some(4) => Architecture::Sdxl,
            Some(9) => unsupported("an SDXL inpainting model (9 input channels)"),
            Some(c) => unsupported(&format!("an SDXL U-Net with {c} input channels")),
            None => unsupported("SDXL without a U-Net"),
        };
    }
    if any("conditioner.embedders.") || any("model.diffusion_model.label_emb.") {
        return unsupported("an SDXL-like model with other text encoders");
    }
    if any("cond_stage_model.model.") {
        return unsupported("Stable Diffusion 2.x (OpenCLIP text encoder)");
    }
    if let Some(s) = shape("model.diffusion_model.input_blocks.0.0.weight") {
        match s.get(1) {
            Some(4) => {}
            Some(9) => return unsupported("an inpainting model (9 input channels)"),
            Some(8) => return unsupported("an instruct-pix2pix model (8 input channels)"),
            Some(c) => return unsupported(&format!("a U-Net with {c} input channels")),
            None => return unsupported("a U-Net whose conv_in weight is not 4-D"),
        }
        if shape("model.diffusion_model.input_blocks.1.1.proj_in.weight")
            .is_some_and(|s| s.len() == 2)
        {
            return unsupported("Stable Diffusion 2.x (linear attention projections)");
        }
        return Architecture::Sd1;
    }
    unsupported("no Stable Diffusion U-Net (no `model.diffusion_model.input_blocks.0.0.weight`)")
}

/// Replaces the first matching prefix of `rest` (after `from`) with `to`.
fn swap(rest: &str, pairs: &[(&str, &str)]) -> String {
    for (from, to) in pairs {
        if let Some(tail) = rest.strip_prefix(from) {
            return format!("{to}{tail}");
        }
    }
    rest.to_string()
}

fn unet_resnet(rest: &str) -> String {
    swap(
        rest,
        &[
            ("in_layers.0.", "norm1."),
            ("in_layers.2.", "conv1."),
            ("emb_layers.1.", "time_emb_proj."),
            ("out_layers.0.", "norm2."),
            ("out_layers.3.", "conv2."),
            ("skip_connection.", "conv_shortcut."),
        ],
    )
}

/// Splits `"12.0.rest"` into `(12, 0, "rest")`.
fn indices(s: &str) -> Option<(usize, usize, &str)> {
    let (a, s) = s.split_once('.')?;
    let (b, rest) = s.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?, rest))
}

/// The diffusers U-Net key of an LDM U-Net key (without `model.diffusion_model.`), given
/// `layers_per_block`, or `None` for keys outside the mapping.
pub(crate) fn unet_key(key: &str, layers: usize) -> Option<String> {
    let per = layers + 1;
    if let Some(rest) = key.strip_prefix("time_embed.") {
        return Some(swap(
            rest,
            &[
                ("0.", "time_embedding.linear_1."),
                ("2.", "time_embedding.linear_2."),
            ],
        ));
    }
    if let Some(rest) = key.strip_prefix("out.") {
        return Some(swap(rest, &[("0.", "conv_norm_out."), ("2.", "conv_out.")]));
    }
    if let Some(rest) = key.strip_prefix("label_emb.0.") {
        return Some(swap(
            rest,
            &[
                ("0.", "add_embedding.linear_1."),
                ("2.", "add_embedding.linear_2."),
            ],
        ));
    }
    if let Some(rest) = key.strip_prefix("input_blocks.") {
        let (i, part, tail) = indices(rest)?;
        if i == 0 {
            return (part == 0).then(|| format!("conv_in.{tail}"));
        }
        let (b, j) = ((i - 1) / per, (i - 1) % per);
        return Some(match (j == layers, part) {
            (true, 0) => format!(
                "down_blocks.{b}.downsamplers.0.conv.{}",
                tail.strip_prefix("op.")?
            ),
            (false, 0) => format!("down_blocks.{b}.resnets.{j}.{}", unet_resnet(tail)),
            (false, 1) => format!("down_blocks.{b}.attentions.{j}.{tail}"),
            _ => return None,
        });
    }
    if let Some(rest) = key.strip_prefix("middle_block.") {
        let (part, tail) = rest.split_once('.')?;
        return Some(match part {
            "0" => format!("mid_block.resnets.0.{}", unet_resnet(tail)),
            "1" => format!("mid_block.attentions.0.{tail}"),
            "2" => format!("mid_block.resnets.1.{}", unet_resnet(tail)),
            _ => return None,
        });
    }
    if let Some(rest) = key.strip_prefix("output_blocks.") {
        let (i, part, tail) = indices(rest)?;
        let (b, j) = (i / per, i % per);
        if let Some(conv) = tail.strip_prefix("conv.") {
            // The upsampler: part 1 in plain up blocks, part 2 after an attention.
            return (j == layers && part >= 1)
                .then(|| format!("up_blocks.{b}.upsamplers.0.conv.{conv}"));
        }
        return Some(match part {
            0 => format!("up_blocks.{b}.resnets.{j}.{}", unet_resnet(tail)),
            1 => format!("up_blocks.{b}.attentions.{j}.{tail}"),
            _ => return None,
        });
    }
    None
}

fn unet_resnet_ldm(rest: &str) -> String {
    swap(
        rest,
        &[
            ("norm1.", "in_layers.0."),
            ("conv1.", "in_layers.2."),
            ("time_emb_proj.", "emb_layers.1."),
            ("norm2.", "out_layers.0."),
            ("conv2.", "out_layers.3."),
            ("conv_shortcut.", "skip_connection."),
        ],
    )
}

/// The LDM name of a diffusers U-Net key, the inverse of [`unet_key`]: kohya's SDXL LoRAs
/// name U-Net modules this way (`lora_unet_input_blocks_4_1_…`). `up_has_attention(b)`
/// says whether up block `b` has attentions (its upsampler is then part 2, else part 1).
pub(crate) fn unet_ldm_key(
    key: &str,
    layers: usize,
    up_has_attention: impl Fn(usize) -> bool,
) -> Option<String> {
    let per = layers + 1;
    let fixed = [
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("add_embedding.linear_1.", "label_emb.0.0."),
        ("add_embedding.linear_2.", "label_emb.0.2."),
        ("conv_in.", "input_blocks.0.0."),
        ("conv_norm_out.", "out.0."),
        ("conv_out.", "out.2."),
        ("mid_block.resnets.0.", "middle_block.0."),
        ("mid_block.attentions.0.", "middle_block.1."),
        ("mid_block.resnets.1.", "middle_block.2."),
    ];
    for (from, to) in fixed {
        if let Some(tail) = key.strip_prefix(from) {
            let tail = match from.starts_with("mid_block.resnets") {
                true => unet_resnet_ldm(tail),
                false => tail.to_string(),
            };
            return Some(format!("{to}{tail}"));
        }
    }
    let (side, rest) = key.split_once('.')?;
    let (b, rest) = rest.split_once('.')?;
    let b: usize = b.parse().ok()?;
    let (kind, rest) = rest.split_once('.')?;
    let (j, tail) = rest.split_once('.')?;
    let j: usize = j.parse().ok()?;
    Some(match (side, kind) {
        ("down_blocks", "resnets") => {
            format!(
                "input_blocks.{}.0.{}",
                1 + b * per + j,
                unet_resnet_ldm(tail)
            )
        }
        ("down_blocks", "attentions") => format!("input_blocks.{}.1.{tail}", 1 + b * per + j),
        ("down_blocks", "downsamplers") => {
            format!(
                "input_blocks.{}.0.op.{}",
                (b + 1) * per,
                tail.strip_prefix("conv.")?
            )
        }
        ("up_blocks", "resnets") => {
            format!("output_blocks.{}.0.{}", b * per + j, unet_resnet_ldm(tail))
        }
        ("up_blocks", "attentions") => format!("output_blocks.{}.1.{tail}", b * per + j),
        ("up_blocks", "upsamplers") => format!(
            "output_blocks.{}.{}.{tail}",
            b * per + layers,
            if up_has_attention(b) { 2 } else { 1 }
        ),
        _ => return None,
    })
}

fn vae_resnet(rest: &str) -> String {
    swap(rest, &[("nin_shortcut.", "conv_shortcut.")])
}

fn vae_mid(rest: &str) -> Option<String> {
    let (part, tail) = rest.split_once('.')?;
    Some(match part {
        "block_1" => format!("mid_block.resnets.0.{}", vae_resnet(tail)),
        "block_2" => format!("mid_block.resnets.1.{}", vae_resnet(tail)),
        "attn_1" => format!(
            "mid_block.attentions.0.{}",
            swap(
                tail,
                &[
                    ("norm.", "group_norm."),
                    ("q.", "to_q."),
                    ("k.", "to_k."),
                    ("v.", "to_v."),
                    ("proj_out.", "to_out.0.")
                ]
            )
        ),
        _ => return None,
    })
}

/// The diffusers VAE key of an LDM VAE key (without `first_stage_model.`), given the number
/// of resolution blocks.
pub(crate) fn vae_key(key: &str, blocks: usize) -> Option<String> {
    for side in ["encoder", "decoder"] {
        let Some(rest) = key.strip_prefix(side).and_then(|r| r.strip_prefix('.')) else {
            continue;
        };
        let mapped = if let Some(r) = rest.strip_prefix("mid.") {
            vae_mid(r)?
        } else if let Some(r) = rest.strip_prefix("norm_out.") {
            format!("conv_norm_out.{r}")
        } else if let Some(r) = rest
            .strip_prefix("down.")
            .or_else(|| rest.strip_prefix("up."))
        {
            let (i, r) = r.split_once('.')?;
            let i: usize = i.parse().ok()?;
            let i = if side == "decoder" {
                blocks.checked_sub(i + 1)?
            } else {
                i
            };
            let kind = if side == "decoder" {
                "up_blocks"
            } else {
                "down_blocks"
            };
            if let Some(r) = r.strip_prefix("block.") {
                let (j, r) = r.split_once('.')?;
                format!("{kind}.{i}.resnets.{j}.{}", vae_resnet(r))
            } else if let Some(r) = r
                .strip_prefix("downsample.")
                .or_else(|| r.strip_prefix("upsample."))
            {
                let sampler = if side == "decoder" {
                    "upsamplers"
                } else {
                    "downsamplers"
                };
                format!("{kind}.{i}.{sampler}.0.{r}")
            } else {
                return None;
            }
        } else {
            rest.to_string()
        };
        return Some(format!("{side}.{mapped}"));
    }
    Some(key.to_string())
}

/// Whether a VAE key is one of the attention's 1x1 convolutions that become linears.
pub(crate) fn vae_conv_to_linear(diffusers_key: &str) -> bool {
    diffusers_key.contains("mid_block.attentions.0.to_") && diffusers_key.ends_with(".weight")
}

/// The text encoder key of an LDM key (without `cond_stage_model.transformer.`).
pub(crate) fn text_key(key: &str) -> String {
    // `text_projection` (SDXL's second encoder) sits beside `text_model`, not inside it.
    if key.starts_with("text_model.") || key.starts_with("text_projection.") {
        key.to_string()
    } else {
        format!("text_model.{key}")
    }
}

/// Which component an LDM key belongs to, and the key without its prefix; `None` for keys
/// a loader ignores (EMA copies, unknown extras are reported by the caller).
pub(crate) fn component_of(key: &str) -> Option<(Component, &str)> {
    if let Some(r) = key.strip_prefix("model.diffusion_model.") {
        return Some((Component::Unet, r));
    }
    if let Some(r) = key.strip_prefix("first_stage_model.") {
        return Some((Component::Vae, r));
    }
    if let Some(r) = key.strip_prefix("cond_stage_model.transformer.") {
        return Some((Component::TextEncoder, r));
    }
    if let Some(r) = key.strip_prefix("conditioner.embedders.0.transformer.") {
        return Some((Component::TextEncoder, r));
    }
    if let Some(r) = key.strip_prefix("conditioner.embedders.1.model.") {
        return Some((Component::TextEncoder2, r));
    }
    None
}

/// How an OpenCLIP tensor feeds the model's: a key, and for a fused attention projection
/// the third of its rows, or for the text projection a transpose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OpenClipPart {
    /// The transformers key.
    pub key: String,
    /// Which third of the rows (`in_proj_weight`/`in_proj_bias` hold q, k and v stacked).
    pub third: Option<usize>,
    /// Whether the tensor is the transpose of the model's (`text_projection`).
    pub transpose: bool,
}

/// The transformers keys of an OpenCLIP text-tower key (SDXL's second encoder, without
/// `conditioner.embedders.1.model.`); empty for keys the model does not use
/// (`logit_scale`), `None` for unknown keys.
///
/// | OpenCLIP | transformers (`CLIPTextModelWithProjection`) |
/// |---|---|
/// | `token_embedding.weight`, `positional_embedding` | `text_model.embeddings.{token,position}_embedding.weight` |
/// | `transformer.resblocks.N.ln_{1,2}` | `text_model.encoder.layers.N.layer_norm{1,2}` |
/// | `….attn.in_proj_{weight,bias}` (q, k, v stacked) | `….self_attn.{q,k,v}_proj` |
/// | `….attn.out_proj`, `….mlp.c_fc`, `….mlp.c_proj` | `….self_attn.out_proj`, `….mlp.fc1`, `….mlp.fc2` |
/// | `ln_final` | `text_model.final_layer_norm` |
/// | `text_projection` (`[hidden, projection]`) | `text_projection.weight` (transposed) |
pub(crate) fn openclip_key(key: &str) -> Option<Vec<OpenClipPart>> {
    let one = |key: String| {
        Some(vec![OpenClipPart {
            key,
            third: None,
            transpose: false,
        }])
    };
    match key {
        "token_embedding.weight" => {
            return one("text_model.embeddings.token_embedding.weight".into());
        }
        "positional_embedding" => {
            return one("text_model.embeddings.position_embedding.weight".into());
        }
        "text_projection" => {
            return Some(vec![OpenClipPart {
                key: "text_projection.weight".into(),
                third: None,
                transpose: true,
            }]);
        }
        "logit_scale" => return Some(vec![]),
        _ => {}
    }
    if let Some(rest) = key.strip_prefix("ln_final.") {
        return one(format!("text_model.final_layer_norm.{rest}"));
    }
    let rest = key.strip_prefix("transformer.resblocks.")?;
    let (n, rest) = rest.split_once('.')?;
    let n: usize = n.parse().ok()?;
    let layer = format!("text_model.encoder.layers.{n}");
    if let Some(kind) = rest.strip_prefix("attn.in_proj_") {
        return Some(
            ["q_proj", "k_proj", "v_proj"]
                .iter()
                .enumerate()
                .map(|(i, p)| OpenClipPart {
                    key: format!("{layer}.self_attn.{p}.{kind}"),
                    third: Some(i),
                    transpose: false,
                })
                .collect(),
        );
    }
    let mapped = swap(
        rest,
        &[
            ("ln_1.", "layer_norm1."),
            ("ln_2.", "layer_norm2."),
            ("attn.out_proj.", "self_attn.out_proj."),
            ("mlp.c_fc.", "mlp.fc1."),
            ("mlp.c_proj.", "mlp.fc2."),
        ],
    );
    (mapped != rest).then(|| one(format!("{layer}.{mapped}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd15_unet_names() {
        let m = |k| unet_key(k, 2).unwrap();
        assert_eq!(m("input_blocks.0.0.weight"), "conv_in.weight");
        assert_eq!(
            m("input_blocks.1.0.in_layers.0.weight"),
            "down_blocks.0.resnets.0.norm1.weight"
        );
        assert_eq!(
            m("input_blocks.2.1.proj_in.weight"),
            "down_blocks.0.attentions.1.proj_in.weight"
        );
        assert_eq!(
            m("input_blocks.3.0.op.bias"),
            "down_blocks.0.downsamplers.0.conv.bias"
        );
        assert_eq!(
            m("input_blocks.4.0.skip_connection.weight"),
            "down_blocks.1.resnets.0.conv_shortcut.weight"
        );
        assert_eq!(
            m("input_blocks.11.0.emb_layers.1.weight"),
            "down_blocks.3.resnets.1.time_emb_proj.weight"
        );
        assert_eq!(
            m("middle_block.1.transformer_blocks.0.attn1.to_q.weight"),
            "mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight"
        );
        assert_eq!(
            m("output_blocks.2.1.conv.weight"),
            "up_blocks.0.upsamplers.0.conv.weight"
        );
        assert_eq!(
            m("output_blocks.4.0.out_layers.3.weight"),
            "up_blocks.1.resnets.1.conv2.weight"
        );
        assert_eq!(
            m("output_blocks.5.2.conv.bias"),
            "up_blocks.1.upsamplers.0.conv.bias"
        );
        assert_eq!(
            m("output_blocks.11.1.proj_out.weight"),
            "up_blocks.3.attentions.2.proj_out.weight"
        );
        assert_eq!(m("time_embed.2.bias"), "time_embedding.linear_2.bias");
        assert_eq!(m("out.2.weight"), "conv_out.weight");
    }

    #[test]
    fn sd15_vae_names() {
        let m = |k| vae_key(k, 4).unwrap();
        assert_eq!(
            m("encoder.down.1.block.0.nin_shortcut.weight"),
            "encoder.down_blocks.1.resnets.0.conv_shortcut.weight"
        );
        assert_eq!(
            m("encoder.down.0.downsample.conv.weight"),
            "encoder.down_blocks.0.downsamplers.0.conv.weight"
        );
        assert_eq!(
            m("decoder.up.3.block.2.conv1.weight"),
            "decoder.up_blocks.0.resnets.2.conv1.weight"
        );
        assert_eq!(
            m("decoder.up.1.upsample.conv.bias"),
            "decoder.up_blocks.2.upsamplers.0.conv.bias"
        );
        assert_eq!(
            m("encoder.mid.attn_1.proj_out.weight"),
            "encoder.mid_block.attentions.0.to_out.0.weight"
        );
        assert_eq!(
            m("decoder.mid.attn_1.norm.bias"),
            "decoder.mid_block.attentions.0.group_norm.bias"
        );
        assert_eq!(m("decoder.norm_out.weight"), "decoder.conv_norm_out.weight");
        assert_eq!(m("quant_conv.weight"), "quant_conv.weight");
    }

    #[test]
    fn architectures_are_told_apart() {
        let det = |keys: &[&str], conv_in: Option<Vec<usize>>| {
            detect(keys.iter().copied(), |k| {
                (k == "model.diffusion_model.input_blocks.0.0.weight")
                    .then(|| conv_in.clone())
                    .flatten()
            })
        };
        let sd1 = [
            "model.diffusion_model.input_blocks.0.0.weight",
            "cond_stage_model.transformer.text_model.final_layer_norm.weight",
        ];
        assert_eq!(det(&sd1, Some(vec![320, 4, 3, 3])), Architecture::Sd1);
        assert!(
            matches!(det(&sd1, Some(vec![320, 9, 3, 3])), Architecture::Unsupported(s) if s.contains("inpainting"))
        );
        let xl = [
            "model.diffusion_model.input_blocks.0.0.weight",
            "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight",
            "conditioner.embedders.1.model.ln_final.weight",
        ];
        assert_eq!(det(&xl, Some(vec![320, 4, 3, 3])), Architecture::Sdxl);
        assert!(
            matches!(det(&xl, Some(vec![320, 9, 3, 3])), Architecture::Unsupported(s) if s.contains("SDXL inpainting"))
        );
        assert!(
            matches!(det(&["conditioner.embedders.1.model.ln_final.weight"], None), Architecture::Unsupported(s) if s.contains("SDXL without"))
        );
        assert!(
            matches!(det(&["conditioner.embedders.0.model.ln_final.weight"], None), Architecture::Unsupported(s) if s.contains("refiner"))
        );
        assert!(
            matches!(det(&["double_blocks.0.img_attn.qkv.weight"], None), Architecture::Unsupported(s) if s == "Flux")
        );
    }
}

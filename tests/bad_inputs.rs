//! The bad-input corpus: one table of inputs a stranger's files and hands can produce, each
//! run through the real `ditail` binary (CPU, tiny fixture models, 64 px, 2 + 2 steps).
//!
//! Every input is generated here, at run time, into the case's own folder. A case that is
//! refused must exit 2 (or 1 where the fault can only show while running: NaN weights are
//! found while converting, after the up-front checks), say what is wrong naming the file,
//! key or value, and write nothing: the output folder stays empty and the case's folder is
//! unchanged. A case whose right behaviour is to work (a 16-bit PNG, an empty prompt) exits
//! 0 and its output is checked. The test prints "N cases: X refused with exit 2, Y with
//! exit 1, Z accepted" (with `--nocapture`); `BAD_INPUTS_FILTER=text` runs only the cases
//! whose name holds `text`.

#![cfg(unix)]

mod common;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{fixtures, loading, model_dir};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde_json::{Value, json};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------

/// What a case must do.
#[derive(Clone, Copy)]
enum Expect {
    /// Refused with this exit code, a message holding every string, nothing written.
    Refused(i32, &'static [&'static str]),
    /// Succeeds; the check looks at what it wrote.
    Accepted(fn(&Ctx) -> Result<(), String>),
}
use Expect::{Accepted, Refused};

/// Cases that only make sense for some users (root reads files whatever their mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Only {
    Always,
    Root,
    NotRoot,
}

struct Case {
    name: &'static str,
    /// Writes the inputs into the case's folder and returns the arguments (after
    /// `--backend cpu`).
    input: fn(&Ctx) -> Vec<OsString>,
    expect: Expect,
    only: Only,
}

const fn case(name: &'static str, input: fn(&Ctx) -> Vec<OsString>, expect: Expect) -> Case {
    Case {
        name,
        input,
        expect,
        only: Only::Always,
    }
}

const fn only(
    only: Only,
    name: &'static str,
    input: fn(&Ctx) -> Vec<OsString>,
    expect: Expect,
) -> Case {
    Case {
        name,
        input,
        expect,
        only,
    }
}

fn cases() -> Vec<Case> {
    vec![
        // --- Models the method cannot use (refused at plan time, headers only: exit 2) ---
        case(
            "model: an inpainting U-Net in a diffusers folder (in_channels 9)",
            |c| {
                let m = c.model_copy("inpaint");
                unet_inputs(&m, 9, 9);
                T::new().source(&m).args(c)
            },
            Refused(2, &["inpaint", "inpainting model", "in_channels 9"]),
        ),
        case(
            "model: an instruct-pix2pix U-Net as the target (in_channels 8)",
            |c| {
                let m = c.model_copy("pix2pix");
                unet_inputs(&m, 8, 8);
                T::new().arg("--target").arg(m.as_os_str()).args(c)
            },
            Refused(2, &["pix2pix", "instruct-pix2pix model"]),
        ),
        case(
            "model: a depth-to-image U-Net (in_channels 5)",
            |c| {
                let m = c.model_copy("depth");
                unet_inputs(&m, 5, 5);
                T::new().source(&m).args(c)
            },
            Refused(2, &["depth", "depth-to-image model"]),
        ),
        case(
            "model: a U-Net whose conv_in weight disagrees with its config",
            |c| {
                let m = c.model_copy("conv-in-shape");
                unet_inputs(&m, 4, 9);
                T::new().source(&m).args(c)
            },
            Refused(
                2,
                &["conv-in-shape", "conv_in.weight", "configuration gives"],
            ),
        ),
        // --- Weights whose numbers are wrong (found while converting: exit 1) ---
        case(
            "checkpoint: NaN in a U-Net weight",
            |c| {
                let m = c.model_copy("nan-unet");
                edit_f32(&m.join(UNET), "conv_in.weight", |v| v[5] = f32::NAN);
                T::new().source(&m).args(c)
            },
            Refused(1, &["nan-unet", "conv_in.weight", "NaN at element 5"]),
        ),
        case(
            "checkpoint: +inf in a VAE weight",
            |c| {
                let m = c.model_copy("inf-vae");
                edit_f32(&m.join(VAE), "decoder.conv_out.weight", |v| {
                    v[0] = f32::INFINITY
                });
                T::new().source(&m).args(c)
            },
            Refused(
                1,
                &["inf-vae", "decoder.conv_out.weight", "inf at element 0"],
            ),
        ),
        case(
            "checkpoint: -inf in a text encoder weight",
            |c| {
                let m = c.model_copy("neg-inf-text");
                edit_f32(&m.join(TEXT), "text_model.final_layer_norm.weight", |v| {
                    v[3] = f32::NEG_INFINITY
                });
                T::new().source(&m).args(c)
            },
            Refused(
                1,
                &["neg-inf-text", "text_model.final_layer_norm.weight", "-inf"],
            ),
        ),
        case(
            "checkpoint: NaN in a bf16 file",
            |c| {
                let m = c.model_copy("bf16-nan");
                let path = m.join(UNET);
                let mut t = read_st(&path);
                for e in &mut t {
                    let mut v = f32s(&e.3);
                    if e.0 == "conv_out.bias" {
                        v[1] = f32::NAN;
                    }
                    e.1 = Dtype::BF16;
                    e.3 = v
                        .iter()
                        .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                        .collect();
                }
                write_st(&path, &t);
                T::new().source(&m).args(c)
            },
            Refused(1, &["bf16-nan", "conv_out.bias", "NaN at element 1"]),
        ),
        case(
            "checkpoint: a weight beyond f16's range, loaded in f16",
            |c| {
                let m = c.model_copy("f16-overflow");
                edit_f32(&m.join(UNET), "conv_in.bias", |v| v[0] = 1e6);
                let mut a = T::new().source(&m).args(c);
                a.splice(0..0, os(&["--dtype", "f16"]));
                a
            },
            Refused(1, &["conv_in.bias", "1000000", "--dtype f32"]),
        ),
        case(
            "checkpoint: the U-Net's output scaled by 1e5 overflows f16 while running",
            |c| {
                let m = c.model_copy("f16-latents");
                edit_f32(&m.join(UNET), "conv_out.weight", |v| {
                    v.iter_mut().for_each(|x| *x *= 1e5)
                });
                let mut a = T::new().source(&m).args(c);
                a.splice(0..0, os(&["--dtype", "f16"]));
                a
            },
            Refused(
                1,
                &[
                    "NaN or infinite",
                    "inversion step 1 of 2",
                    "f16-latents",
                    "--dtype f32",
                ],
            ),
        ),
        case(
            "checkpoint: U-Net output weights near f32's limit overflow while running",
            |c| {
                let m = c.model_copy("f32-latents");
                edit_f32(&m.join(UNET), "conv_out.weight", |v| {
                    v.iter_mut().for_each(|x| *x = x.signum() * 3e38)
                });
                T::new().source(&m).args(c)
            },
            Refused(
                1,
                &["NaN or infinite", "inversion step", "f32-latents", "in f32"],
            ),
        ),
        // --- Weights of the wrong kind (header only: exit 2) ---
        case(
            "checkpoint: an i32 tensor where a float belongs",
            |c| {
                let m = c.model_copy("i32");
                retype(&m.join(UNET), "conv_in.bias", Dtype::I32);
                T::new().source(&m).args(c)
            },
            Refused(
                2,
                &["diffusion_pytorch_model.safetensors", "conv_in.bias", "I32"],
            ),
        ),
        case(
            "checkpoint: a bool tensor where a float belongs",
            |c| {
                let m = c.model_copy("bool");
                let path = m.join(VAE);
                let mut t = read_st(&path);
                let e = t
                    .iter_mut()
                    .find(|e| e.0 == "encoder.conv_in.bias")
                    .unwrap();
                e.1 = Dtype::BOOL;
                e.3 = vec![1u8; e.2.iter().product()];
                write_st(&path, &t);
                T::new().source(&m).args(c)
            },
            Refused(2, &["encoder.conv_in.bias", "BOOL"]),
        ),
        case(
            "checkpoint: i64 position_ids (older transformers save them) are ignored",
            |c| {
                let m = c.model_copy("position-ids");
                let path = m.join(TEXT);
                let mut t = read_st(&path);
                let ids: Vec<u8> = (0..77i64).flat_map(|i| i.to_le_bytes()).collect();
                t.push((
                    "text_model.embeddings.position_ids".into(),
                    Dtype::I64,
                    vec![1, 77],
                    ids,
                ));
                write_st(&path, &t);
                T::new().source(&m).args(c)
            },
            Accepted(png_ok),
        ),
        // --- Hand-written safetensors headers: 8-byte length + JSON + data ---
        case(
            "header: a key listed twice with different offsets",
            |c| {
                let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#;
                T::new()
                    .source(c.write("dup.safetensors", raw_st(header, &[0; 16])))
                    .args(c)
            },
            Refused(2, &["dup.safetensors", "tensor `a` more than once"]),
        ),
        case(
            "header: a key listed twice, both entries the same",
            |c| {
                let header = r#"{"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
                T::new()
                    .source(c.write("dup-same.safetensors", raw_st(header, &[0; 8])))
                    .args(c)
            },
            Refused(2, &["dup-same.safetensors", "tensor `b` more than once"]),
        ),
        case(
            "header: overlapping offsets",
            |c| {
                let header = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#;
                T::new()
                    .source(c.write("overlap.safetensors", raw_st(header, &[0; 24])))
                    .args(c)
            },
            Refused(2, &["overlap.safetensors", "tensor `b`", "overlapping"]),
        ),
        case(
            "header: reversed offsets (end before start)",
            |c| {
                let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#;
                T::new()
                    .source(c.write("reversed.safetensors", raw_st(header, &[0; 8])))
                    .args(c)
            },
            Refused(2, &["reversed.safetensors", "tensor `a`", "reversed"]),
        ),
        case(
            "header: a gap between two tensors",
            |c| {
                let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}}"#;
                T::new()
                    .source(c.write("gap.safetensors", raw_st(header, &[0; 20])))
                    .args(c)
            },
            Refused(2, &["gap.safetensors", "tensor `b`", "gap"]),
        ),
        case(
            "header: a shape whose element count overflows",
            |c| {
                let header = r#"{"huge":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}}"#;
                T::new()
                    .source(c.write("overflow.safetensors", raw_st(header, &[])))
                    .args(c)
            },
            Refused(2, &["overflow.safetensors", "tensor `huge`", "overflows"]),
        ),
        case(
            "header: a byte range that does not match shape and dtype",
            |c| {
                let header = r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}"#;
                T::new()
                    .source(c.write("size.safetensors", raw_st(header, &[0; 8])))
                    .args(c)
            },
            Refused(2, &["size.safetensors", "tensor `w`", "16 bytes"]),
        ),
        case(
            "header: bytes after the last tensor",
            |c| {
                let header = r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
                T::new()
                    .source(c.write("trailing.safetensors", raw_st(header, &[0; 108])))
                    .args(c)
            },
            Refused(2, &["trailing.safetensors", "100 bytes after"]),
        ),
        case(
            "header: a length beyond the file",
            |c| {
                let mut b = 1_000_000u64.to_le_bytes().to_vec();
                b.extend(b"{}");
                T::new().source(c.write("overrun.safetensors", b)).args(c)
            },
            Refused(2, &["overrun.safetensors", "too short"]),
        ),
        case(
            "header: a length of 2^64 - 1",
            |c| {
                let mut b = u64::MAX.to_le_bytes().to_vec();
                b.extend(b"{}");
                T::new().source(c.write("max.safetensors", b)).args(c)
            },
            Refused(2, &["max.safetensors", "safetensors header"]),
        ),
        case(
            "header: not JSON",
            |c| {
                T::new()
                    .source(c.write("text.safetensors", raw_st("hello world", &[])))
                    .args(c)
            },
            Refused(2, &["text.safetensors", "not valid safetensors JSON"]),
        ),
        case(
            "header: a JSON array",
            |c| {
                T::new()
                    .source(c.write("array.safetensors", raw_st("[1, 2, 3]", &[])))
                    .args(c)
            },
            Refused(2, &["array.safetensors", "not valid safetensors JSON"]),
        ),
        case(
            "header: tensors stored out of key order (valid)",
            |c| {
                let m = c.model_copy("out-of-order");
                let path = m.join(VAE);
                let t = read_st(&path);
                // Data laid out in reverse key order: offsets descend as keys ascend.
                let mut header = serde_json::Map::new();
                let mut data = Vec::new();
                for e in t.iter().rev() {
                    let start = data.len();
                    data.extend(&e.3);
                    header.insert(
                        e.0.clone(),
                        json!({"dtype": "F32", "shape": e.2, "data_offsets": [start, data.len()]}),
                    );
                }
                std::fs::write(&path, raw_st(&Value::Object(header).to_string(), &data)).unwrap();
                T::new().source(&m).args(c)
            },
            Accepted(png_ok),
        ),
        // --- Files, folders, links and names ---
        case(
            "file: a zero-length checkpoint",
            |c| {
                T::new()
                    .source(c.write("empty.safetensors", Vec::new()))
                    .args(c)
            },
            Refused(2, &["empty.safetensors", "0 bytes"]),
        ),
        case(
            "file: a zero-length U-Net file in a diffusers folder",
            |c| {
                let m = c.model_copy("empty-unet");
                std::fs::write(m.join(UNET), b"").unwrap();
                T::new().source(&m).args(c)
            },
            Refused(2, &["unet/diffusion_pytorch_model.safetensors", "0 bytes"]),
        ),
        case(
            "file: a zero-length config.json",
            |c| {
                let m = c.model_copy("empty-config");
                std::fs::write(m.join("unet/config.json"), b"").unwrap();
                T::new().source(&m).args(c)
            },
            Refused(2, &["unet/config.json"]),
        ),
        case(
            "folder where a file belongs: a checkpoint name that is a folder",
            |c| {
                let d = c.dir("folder.safetensors");
                T::new().source(&d).args(c)
            },
            Refused(2, &["folder.safetensors"]),
        ),
        case(
            "folder where a file belongs: the U-Net weights",
            |c| {
                let m = c.model_copy("weights-folder");
                std::fs::remove_file(m.join(UNET)).unwrap();
                std::fs::create_dir(m.join(UNET)).unwrap();
                T::new().source(&m).args(c)
            },
            Refused(2, &["weights-folder/unet", "U-Net weights"]),
        ),
        case(
            "folder where a file belongs: config.json",
            |c| {
                let m = c.model_copy("config-folder");
                std::fs::remove_file(m.join("vae/config.json")).unwrap();
                std::fs::create_dir(m.join("vae/config.json")).unwrap();
                T::new().source(&m).args(c)
            },
            Refused(2, &["config-folder/vae", "config.json"]),
        ),
        case(
            "folder where a file belongs: the LoRA",
            |c| {
                let d = c.dir("lora.safetensors");
                T::new().arg("--lora").arg(d).args(c)
            },
            Refused(2, &["lora.safetensors", "is a folder"]),
        ),
        case(
            "folder where a file belongs: the content image",
            |c| {
                let d = c.dir("photo.png");
                T::new().image(d).args(c)
            },
            Refused(2, &["photo.png"]),
        ),
        case(
            "folder where a file belongs: the mask",
            |c| {
                let d = c.dir("mask.png");
                T::new().arg("--mask").arg(d).args(c)
            },
            Refused(2, &["mask.png"]),
        ),
        case(
            "folder where a file belongs: the output",
            |c| {
                let d = c.out.join("taken.png");
                std::fs::create_dir(&d).unwrap();
                let mut a = T::new().args(c);
                *a.last_mut().unwrap() = d.into();
                a
            },
            Refused(2, &["taken.png", "is a folder"]),
        ),
        case(
            "folder where a file belongs: the manifest",
            |c| {
                let d = c.dir("jobs.csv");
                batch(c, &d)
            },
            Refused(2, &["jobs.csv"]),
        ),
        case(
            "file where a folder belongs: the model's unet/",
            |c| {
                let m = c.model_copy("unet-file");
                std::fs::remove_dir_all(m.join("unet")).unwrap();
                std::fs::write(m.join("unet"), b"not a folder").unwrap();
                T::new().source(&m).args(c)
            },
            Refused(2, &["unet-file/unet", "config.json"]),
        ),
        case(
            "file where a folder belongs: the batch output",
            |c| {
                let m = c.write("jobs.csv", manifest_csv(&[&quick_row("r1")]));
                let f = c.write("out-file", b"a file".to_vec());
                vec!["batch".into(), m.into(), "-o".into(), f.into()]
            },
            Refused(2, &["out-file"]),
        ),
        only(
            Only::NotRoot,
            "permissions: an unreadable U-Net file",
            |c| {
                let m = c.model_copy("unreadable");
                chmod(&m.join(UNET), 0o000);
                T::new().source(&m).args(c)
            },
            Refused(2, &["unreadable/unet", "Permission denied"]),
        ),
        only(
            Only::Root,
            "permissions: a U-Net file of mode 000 (root reads it)",
            |c| {
                let m = c.model_copy("unreadable");
                chmod(&m.join(UNET), 0o000);
                T::new().source(&m).args(c)
            },
            Accepted(png_ok),
        ),
        only(
            Only::NotRoot,
            "permissions: an unreadable content image",
            |c| {
                let p = c.png("photo.png", &rgb(96, 72));
                chmod(&p, 0o000);
                T::new().image(p).args(c)
            },
            Refused(2, &["photo.png", "Permission denied"]),
        ),
        only(
            Only::Root,
            "permissions: a content image of mode 000 (root reads it)",
            |c| {
                let p = c.png("photo.png", &rgb(96, 72));
                chmod(&p, 0o000);
                T::new().image(p).args(c)
            },
            Accepted(png_ok),
        ),
        case(
            "symlink loop: the model",
            |c| {
                let p = c.link_loop("loop.safetensors");
                T::new().source(&p).args(c)
            },
            Refused(2, &["loop.safetensors", "symbolic links"]),
        ),
        case(
            "symlink loop: the content image",
            |c| {
                let p = c.link_loop("loop.png");
                T::new().image(p).args(c)
            },
            Refused(2, &["loop.png", "symbolic links"]),
        ),
        case(
            "symlink loop: the LoRA",
            |c| {
                let p = c.link_loop("loop-lora.safetensors");
                T::new().arg("--lora").arg(p).args(c)
            },
            Refused(2, &["loop-lora.safetensors", "symbolic links"]),
        ),
        case(
            "dangling symlink: the model",
            |c| {
                let p = c.path("dangling");
                std::os::unix::fs::symlink(c.path("nowhere.safetensors"), &p).unwrap();
                T::new().source(&p).args(c)
            },
            Refused(2, &["dangling", "No such file"]),
        ),
        case(
            "non-UTF-8 path: the content image",
            |c| {
                let name = OsStr::from_bytes(b"caf\xe9-\xff.png");
                let p = c.dir.join(name);
                std::fs::copy(content(), &p).unwrap();
                T::new().image(p).args(c)
            },
            Accepted(png_ok),
        ),
        case(
            "non-UTF-8 path: the output",
            |c| {
                let mut a = T::new().args(c);
                *a.last_mut().unwrap() = c.out.join(OsStr::from_bytes(b"r\xe9sultat.png")).into();
                a
            },
            Accepted(|c| {
                let p = c.out.join(OsStr::from_bytes(b"r\xe9sultat.png"));
                image::open(&p).map(|_| ()).map_err(|e| e.to_string())
            }),
        ),
        case(
            "non-UTF-8 path: the model",
            |c| {
                let m = c.model_copy("tiny");
                let name = c.dir.join(OsStr::from_bytes(b"mod\xe8le"));
                std::fs::rename(&m, &name).unwrap();
                T::new().source(&name).args(c)
            },
            Refused(2, &["invalid UTF-8"]),
        ),
        // --- LoRAs ---
        case(
            "LoRA: rank 0",
            |c| {
                let p = c.lora("rank0.safetensors", |t| {
                    let key = "lora_unet_down_blocks_1_resnets_0_conv1";
                    set(
                        t,
                        &format!("{key}.lora_down.weight"),
                        Dtype::F16,
                        &[0, 16, 3, 3],
                        &[],
                    );
                    set(
                        t,
                        &format!("{key}.lora_up.weight"),
                        Dtype::F16,
                        &[32, 0, 1, 1],
                        &[],
                    );
                });
                T::new().arg("--lora").arg(p).args(c)
            },
            Refused(
                2,
                &[
                    "rank0.safetensors",
                    "lora_unet_down_blocks_1_resnets_0_conv1",
                    "rank 0",
                ],
            ),
        ),
        case(
            "LoRA: NaN in an up matrix",
            |c| {
                let p = c.lora("nan.safetensors", |t| {
                    edit_f16(
                        t,
                        "lora_unet_down_blocks_2_attentions_0_proj_in.lora_up.weight",
                        |v| v[7] = f32::NAN,
                    )
                });
                T::new().arg("--lora").arg(p).args(c)
            },
            Refused(
                1,
                &[
                    "nan.safetensors",
                    "lora_unet_down_blocks_2_attentions_0_proj_in.lora_up.weight",
                    "NaN at element 7",
                ],
            ),
        ),
        case(
            "LoRA: inf in a down matrix",
            |c| {
                let p = c.lora("inf.safetensors", |t| {
                    edit_f16(
                        t,
                        "lora_te_text_model_encoder_layers_1_mlp_fc1.lora_down.weight",
                        |v| v[0] = f32::INFINITY,
                    )
                });
                T::new().arg("--lora").arg(p).args(c)
            },
            Refused(
                1,
                &[
                    "inf.safetensors",
                    "lora_te_text_model_encoder_layers_1_mlp_fc1.lora_down.weight",
                    "inf",
                ],
            ),
        ),
        case(
            "LoRA: a NaN alpha",
            |c| {
                let p = c.lora("nan-alpha.safetensors", |t| {
                    edit_f16(
                        t,
                        "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k.alpha",
                        |v| v[0] = f32::NAN,
                    )
                });
                T::new().arg("--lora").arg(p).args(c)
            },
            Refused(2, &["nan-alpha.safetensors", "attn2_to_k.alpha", "NaN"]),
        ),
        case(
            "LoRA: an i32 matrix",
            |c| {
                let p = c.lora("i32.safetensors", |t| {
                    let e = t
                        .iter_mut()
                        .find(|e| e.0.ends_with("proj_in.lora_down.weight"))
                        .unwrap();
                    e.1 = Dtype::I32;
                    e.3 = vec![0; e.2.iter().product::<usize>() * 4];
                });
                T::new().arg("--lora").arg(p).args(c)
            },
            Refused(2, &["i32.safetensors", "proj_in.lora_down.weight", "I32"]),
        ),
        case(
            "LoRA: a one-dimensional matrix",
            |c| {
                let p = c.lora("flat.safetensors", |t| {
                    let e = t
                        .iter_mut()
                        .find(|e| e.0.ends_with("proj_in.lora_down.weight"))
                        .unwrap();
                    e.2 = vec![e.2.iter().product()];
                });
                T::new().arg("--lora").arg(p).args(c)
            },
            Refused(
                2,
                &["flat.safetensors", "proj_in.lora_down.weight", "dimensions"],
            ),
        ),
        case(
            "LoRA: down and up of different ranks",
            |c| {
                let p = c.lora("ranks.safetensors", |t| {
                    let key = "lora_unet_down_blocks_2_attentions_0_proj_in";
                    set(
                        t,
                        &format!("{key}.lora_up.weight"),
                        Dtype::F16,
                        &[32, 3, 1, 1],
                        &[0; 192],
                    );
                });
                T::new().arg("--lora").arg(p).args(c)
            },
            Refused(2, &["ranks.safetensors", "proj_in", "do not share a rank"]),
        ),
        case(
            "LoRA: a zero-length file",
            |c| {
                let p = c.write("empty-lora.safetensors", Vec::new());
                T::new().arg("--lora").arg(p).args(c)
            },
            Refused(2, &["empty-lora.safetensors", "0 bytes"]),
        ),
        case(
            "LoRA: a NaN scale",
            |c| {
                let mut p = lora_fixture().into_os_string();
                p.push(":nan");
                T::new().arg("--lora").arg(p).args(c)
            },
            Refused(2, &["lora-kohya.safetensors:nan", "finite"]),
        ),
        case(
            "LoRA: a pickle",
            |c| {
                let p = c.write("style.ckpt", b"\x80\x02}q\x00.".to_vec());
                T::new().arg("--lora").arg(p).args(c)
            },
            Refused(2, &["style.ckpt", "pickle"]),
        ),
        case(
            "LoRA: an update of the token embedding",
            |c| {
                let p = c.write("embedding.safetensors", {
                    let key = "lora_te_text_model_embeddings_token_embedding";
                    let mut t = Vec::new();
                    set(
                        &mut t,
                        &format!("{key}.lora_down.weight"),
                        Dtype::F32,
                        &[2, 32],
                        &le(&[0.01; 64]),
                    );
                    set(
                        &mut t,
                        &format!("{key}.lora_up.weight"),
                        Dtype::F32,
                        &[1000, 2],
                        &le(&[0.01; 2000]),
                    );
                    st_bytes(&t)
                });
                T::new().arg("--lora").arg(p).args(c)
            },
            Accepted(png_ok),
        ),
        // --- Prompts ---
        case(
            "prompt: empty",
            |c| T::new().prompt("").args(c),
            Accepted(|c| record_prompt(c, "")),
        ),
        case(
            "prompt: 10,000 characters (3,750 tokens: past the 1,500 ditail encodes)",
            |c| T::new().prompt(&long_prompt()).args(c),
            Refused(2, &["prompt", "at most 20", "1500 tokens"]),
        ),
        case(
            "prompt: pasted from Civitai (weights, escapes, BREAK, 2 chunks), kept as written",
            |c| T::new().prompt(CIVITAI).args(c),
            Accepted(|c| record_prompt(c, CIVITAI)),
        ),
        case(
            "prompt: unbalanced brackets (A1111 accepts them)",
            |c| T::new().prompt("a ((cat:1.3) on [a mat").args(c),
            Accepted(|c| record_prompt(c, "a ((cat:1.3) on [a mat")),
        ),
        case(
            "prompt: right-to-left text with direction marks",
            |c| T::new().prompt(RTL).args(c),
            Accepted(|c| record_prompt(c, RTL)),
        ),
        case(
            "prompt: emoji with joiners and skin tones",
            |c| T::new().prompt(EMOJI).args(c),
            Accepted(|c| record_prompt(c, EMOJI)),
        ),
        case(
            "prompt: a NUL character (from a manifest; argv cannot hold one)",
            |c| {
                let row = json!({"id": "nul-prompt", "image": content(), "prompt": "a\u{0}cat",
                    "source": tiny("tiny-a"), "steps": 2, "inv_steps": 2, "size": 64});
                let m = c.write("jobs.jsonl", format!("{row}\n").into_bytes());
                batch(c, &m)
            },
            // A batch whose one row failed: 64 + 1.
            Refused(65, &["nul-prompt", "the prompt holds a NUL character"]),
        ),
        case(
            "prompt: a 10,000-character negative prompt",
            |c| T::new().arg("--negative-prompt").arg(long_prompt()).args(c),
            Refused(2, &["negative prompt", "1500 tokens"]),
        ),
        // --- Images ---
        case(
            "image: CMYK JPEG",
            |c| {
                T::new()
                    .image(c.write("cmyk.jpg", cmyk_jpeg(32, 24)))
                    .args(c)
            },
            Accepted(png_ok),
        ),
        case(
            "image: 16-bit PNG",
            |c| {
                let img = image::ImageBuffer::<image::Rgb<u16>, _>::from_fn(96, 72, |x, y| {
                    image::Rgb([(x * 600) as u16, (y * 900) as u16, 40000])
                });
                let p = c.path("deep.png");
                img.save(&p).unwrap();
                T::new().image(p).args(c)
            },
            Accepted(png_ok),
        ),
        case(
            "image: grayscale + alpha PNG",
            |c| {
                let img = image::GrayAlphaImage::from_fn(96, 72, |x, y| {
                    image::LumaA([(x * 2) as u8, (y * 3) as u8])
                });
                let p = c.path("gray-alpha.png");
                img.save(&p).unwrap();
                T::new().image(p).args(c)
            },
            Accepted(png_ok),
        ),
        case(
            "image: 1 x 1 pixel",
            |c| T::new().image(c.png("dot.png", &rgb(1, 1))).args(c),
            Accepted(|c| png_size(c, (64, 64))),
        ),
        case(
            "image: a PNG header claiming 30,000 x 30,000 (decompression bomb)",
            |c| {
                T::new()
                    .image(c.write("bomb.png", png_bomb(30_000, 30_000)))
                    .args(c)
            },
            Refused(2, &["bomb.png", "30000 x 30000"]),
        ),
        case(
            "image: a JPEG header claiming 60,000 x 60,000",
            |c| {
                let mut b = jpeg(&rgb(96, 72));
                set_jpeg_size(&mut b, 60_000, 60_000);
                T::new().image(c.write("bomb.jpg", b)).args(c)
            },
            Refused(2, &["bomb.jpg", "60000 x 60000"]),
        ),
        case(
            "image: a truncated JPEG",
            |c| {
                let b = jpeg(&rgb(96, 72));
                let half = b[..b.len() / 2].to_vec();
                T::new().image(c.write("truncated.jpg", half)).args(c)
            },
            Refused(2, &["truncated.jpg"]),
        ),
        case(
            "image: a truncated PNG",
            |c| {
                let p = c.png("full.png", &rgb(96, 72));
                let b = std::fs::read(&p).unwrap();
                std::fs::remove_file(&p).unwrap();
                T::new()
                    .image(c.write("truncated.png", b[..b.len() / 2].to_vec()))
                    .args(c)
            },
            Refused(2, &["truncated.png"]),
        ),
        case(
            "image: a zero-length file",
            |c| T::new().image(c.write("empty.png", Vec::new())).args(c),
            Refused(2, &["empty.png"]),
        ),
        case(
            "image: text named .png",
            |c| {
                T::new()
                    .image(c.write("notes.png", b"just some notes\n".to_vec()))
                    .args(c)
            },
            Refused(2, &["notes.png"]),
        ),
        case(
            "image: a PNG named .jpg (read by its content)",
            |c| {
                let p = c.path("really-a-png.jpg");
                std::fs::copy(content(), &p).unwrap();
                T::new().image(p).args(c)
            },
            Accepted(png_ok),
        ),
        case(
            "image: 1 x 10,000 pixels (an enormous working size)",
            |c| T::new().image(c.png("needle.png", &rgb(1, 10_000))).args(c),
            Refused(2, &["needle.png", "1 x 10000", "working size"]),
        ),
        case(
            "image: a working size of 100,000",
            |c| {
                let mut a = T::new().args(c);
                let i = a.iter().position(|x| x == "--size").unwrap();
                a[i + 1] = "100000".into();
                a
            },
            Refused(2, &["content.png", "100000"]),
        ),
        // --- Masks ---
        case(
            "mask: another aspect ratio than the content",
            |c| {
                let m = c.png("square-mask.png", &white(64, 64));
                T::new().arg("--mask").arg(m).args(c)
            },
            Refused(2, &["square-mask.png", "64 x 64", "aspect ratio"]),
        ),
        case(
            "mask: the content's aspect ratio at a lower resolution",
            |c| {
                let m = c.png("small-mask.png", &white(48, 36));
                T::new().arg("--mask").arg(m).args(c)
            },
            Accepted(png_ok),
        ),
        case(
            "mask: black everywhere",
            |c| {
                let m = c.png("black.png", &image::RgbImage::new(96, 72));
                T::new().arg("--mask").arg(m).args(c)
            },
            Refused(2, &["black.png", "black everywhere"]),
        ),
        case(
            "mask: a decompression bomb",
            |c| {
                let m = c.write("bomb-mask.png", png_bomb(30_000, 30_000));
                T::new().arg("--mask").arg(m).args(c)
            },
            Refused(2, &["bomb-mask.png", "30000 x 30000"]),
        ),
        case(
            "mask: 16-bit grayscale",
            |c| {
                let img = image::ImageBuffer::<image::Luma<u16>, _>::from_fn(96, 72, |x, _| {
                    image::Luma([if x < 48 { 65535 } else { 0 }])
                });
                let p = c.path("mask16.png");
                img.save(&p).unwrap();
                T::new().arg("--mask").arg(p).args(c)
            },
            Accepted(png_ok),
        ),
        // --- Latents files ---
        case(
            "latents: NaN in an inverted latent",
            |c| {
                let p = c.latents("nan.safetensors", |t| {
                    let e = t.iter_mut().find(|e| e.0.starts_with("inverted.")).unwrap();
                    let mut v = f32s(&e.3);
                    v[9] = f32::NAN;
                    e.3 = le(&v);
                });
                from_latents(c, &p)
            },
            Refused(2, &["nan.safetensors", "inverted.", "NaN at element 9"]),
        ),
        case(
            "latents: tensors of different shapes",
            |c| {
                let p = c.latents("shapes.safetensors", |t| {
                    let e = t.iter_mut().find(|e| e.0 == "z0").unwrap();
                    e.2.swap(2, 3);
                });
                from_latents(c, &p)
            },
            Refused(2, &["shapes.safetensors", "[1, 4, 10, 8]"]),
        ),
        case(
            "latents: three channels where the U-Net takes four",
            |c| {
                let p = c.latents("channels.safetensors", |t| {
                    for e in t.iter_mut() {
                        e.2[1] = 3;
                        e.3.truncate(e.3.len() / 4 * 3);
                    }
                });
                from_latents(c, &p)
            },
            Refused(2, &["channels.safetensors", "3 channels", "takes 4"]),
        ),
        case(
            "latents: a checkpoint given as a latents file",
            |c| from_latents(c, &tiny("tiny-a").join(VAE)),
            Refused(
                2,
                &["diffusion_pytorch_model.safetensors", "ditail_inversion"],
            ),
        ),
        // --- Numbers ---
        case(
            "number: --omega nan",
            |c| T::new().arg("--omega").arg("nan").args(c),
            Refused(2, &["omega NaN"]),
        ),
        case(
            "number: --alpha inf",
            |c| T::new().arg("--alpha").arg("inf").args(c),
            Refused(2, &["alpha inf"]),
        ),
        case(
            "number: --inv-steps 0 and --steps 0",
            |c| {
                let mut a = T::new().args(c);
                for flag in ["--inv-steps", "--steps"] {
                    let i = a.iter().position(|x| x == flag).unwrap();
                    a[i + 1] = "0".into();
                }
                a
            },
            Refused(2, &["steps must be at least 1"]),
        ),
        case(
            "number: --inv-steps 5000 (more than the 1000 training steps)",
            |c| {
                let mut a = T::new().args(c);
                let i = a.iter().position(|x| x == "--inv-steps").unwrap();
                a[i + 1] = "5000".into();
                a
            },
            Refused(2, &["5000"]),
        ),
        case(
            "number: a seed of 2^64",
            |c| {
                os(&[
                    "generate",
                    "--prompt",
                    "p",
                    "--model",
                    tiny("tiny-a").to_str().unwrap(),
                    "--seed",
                    "18446744073709551616",
                    "-o",
                    c.out_png().to_str().unwrap(),
                ])
            },
            Refused(2, &["18446744073709551616"]),
        ),
        // --- Manifests ---
        case(
            "manifest: CSV with a byte-order mark",
            |c| {
                let mut text = b"\xef\xbb\xbf".to_vec();
                text.extend(manifest_csv(&[&quick_row("bom")]));
                let m = c.write("jobs.csv", text);
                batch(c, &m)
            },
            Accepted(|c| out_files(c, &["bom.png"])),
        ),
        case(
            "manifest: JSON Lines with a byte-order mark",
            |c| {
                let row = json!({"id": "bom", "image": content(), "prompt": "a cat",
                    "source": tiny("tiny-a"), "steps": 2, "inv_steps": 2, "size": 64});
                let m = c.write("jobs.jsonl", format!("\u{feff}{row}\n").into_bytes());
                batch(c, &m)
            },
            Accepted(|c| out_files(c, &["bom.png"])),
        ),
        case(
            "manifest: CSV with CRLF line ends",
            |c| {
                let text = String::from_utf8(manifest_csv(&[&quick_row("crlf")])).unwrap();
                let m = c.write("jobs.csv", text.replace('\n', "\r\n").into_bytes());
                batch(c, &m)
            },
            Accepted(|c| out_files(c, &["crlf.png"])),
        ),
        case(
            "manifest: CSV with a newline inside a quoted prompt",
            |c| {
                let row = format!(
                    "multi,{},\"a cat\non two lines\",{},,2,2,64",
                    content(),
                    tiny("tiny-a").display()
                );
                let m = c.write("jobs.csv", manifest_csv(&[&row]));
                batch(c, &m)
            },
            Accepted(|c| {
                out_files(c, &["multi.png"])?;
                let rec = record(&c.out.join("multi.png"))?;
                expect_eq(&rec["prompt"], "a cat\non two lines")
            }),
        ),
        case(
            "manifest: CSV with duplicate ids",
            |c| {
                let m = c.write(
                    "jobs.csv",
                    manifest_csv(&[&quick_row("same"), &quick_row("other"), &quick_row("same")]),
                );
                batch(c, &m)
            },
            Refused(2, &["rows 1 and 3", "\"same\""]),
        ),
        case(
            "manifest: CSV id ../../x",
            |c| {
                let m = c.write("jobs.csv", manifest_csv(&[&quick_row("../../x")]));
                batch(c, &m)
            },
            Refused(2, &["row 1", "\"../../x\"", "path separator"]),
        ),
        case(
            "manifest: CSV id /abs/x",
            |c| {
                let m = c.write("jobs.csv", manifest_csv(&[&quick_row("/abs/x")]));
                batch(c, &m)
            },
            Refused(2, &["row 1", "\"/abs/x\"", "path separator"]),
        ),
        case(
            "manifest: CSV id NUL (a device on Windows)",
            |c| {
                let m = c.write("jobs.csv", manifest_csv(&[&quick_row("NUL")]));
                batch(c, &m)
            },
            Refused(2, &["row 1", "\"NUL\"", "device name on Windows"]),
        ),
        case(
            "manifest: CSV ids that differ only in case (one file on Windows and macOS)",
            |c| {
                let m = c.write(
                    "jobs.csv",
                    manifest_csv(&[&quick_row("Cat"), &quick_row("cat")]),
                );
                batch(c, &m)
            },
            Refused(2, &["rows 1 and 2", "\"cat.png\""]),
        ),
        case(
            "manifest: CSV output name ../x.png",
            |c| {
                let m = c.write(
                    "jobs.csv",
                    format!(
                        "id,image,prompt,source,steps,inv_steps,size,output\nok,{},a cat,{},2,2,64,../x.png\n",
                        content(),
                        tiny("tiny-a").display()
                    )
                    .into_bytes(),
                );
                batch(c, &m)
            },
            Refused(2, &["row 1", "\"../x.png\""]),
        ),
        case(
            "manifest: CSV with an unterminated quote",
            |c| {
                let mut text = manifest_csv(&[&quick_row("fine")]);
                text.extend(
                    format!(
                        "broken,{},\"a cat,{},,2,2,64\n",
                        content(),
                        tiny("tiny-a").display()
                    )
                    .bytes(),
                );
                let m = c.write("jobs.csv", text);
                batch(c, &m)
            },
            Refused(2, &["jobs.csv"]),
        ),
        case(
            "manifest: CSV row with more fields than the header",
            |c| {
                let m = c.write(
                    "jobs.csv",
                    manifest_csv(&[&format!("{},extra", quick_row("long"))]),
                );
                batch(c, &m)
            },
            Refused(2, &["jobs.csv", "fields"]),
        ),
        case(
            "manifest: CSV with an unknown column",
            |c| {
                let m = c.write(
                    "jobs.csv",
                    b"id,image,prompt,colour\nr1,x.png,a cat,red\n".to_vec(),
                );
                batch(c, &m)
            },
            Refused(2, &["jobs.csv", "unknown field `colour`"]),
        ),
        case(
            "manifest: CSV that is not UTF-8",
            |c| {
                let mut text = manifest_csv(&[]);
                text.extend(b"r1,caf\xe9.png,a cat,,,,,\n");
                let m = c.write("jobs.csv", text);
                batch(c, &m)
            },
            Refused(2, &["jobs.csv", "UTF-8"]),
        ),
        case(
            "manifest: JSON Lines with a line that is not JSON",
            |c| {
                let row = json!({"id": "a", "prompt": "p"});
                let m = c.write(
                    "jobs.jsonl",
                    format!("{row}\n{{\"id\": \"b\",\n").into_bytes(),
                );
                batch(c, &m)
            },
            Refused(2, &["jobs.jsonl:2", "not valid JSON"]),
        ),
        case(
            "manifest: JSON Lines with an array for a row",
            |c| {
                let m = c.write("jobs.jsonl", b"[\"a\", \"b\"]\n".to_vec());
                batch(c, &m)
            },
            Refused(2, &["jobs.jsonl:1", "expected a JSON object"]),
        ),
        case(
            "manifest: JSON Lines with a number that is not one",
            |c| {
                let row = json!({"id": "steps", "image": content(), "prompt": "a cat",
                    "source": tiny("tiny-a"), "steps": "two", "inv_steps": 2, "size": 64});
                let m = c.write("jobs.jsonl", format!("{row}\n").into_bytes());
                batch(c, &m)
            },
            // A batch whose one row failed: 64 + 1.
            Refused(65, &["steps", "cannot read `two`"]),
        ),
        case(
            "manifest: an empty file (no rows, nothing to do)",
            |c| {
                let m = c.write("jobs.jsonl", Vec::new());
                batch(c, &m)
            },
            Accepted(|c| out_files(c, &[])),
        ),
    ]
}

// ---------------------------------------------------------------------------------------
// Running the table
// ---------------------------------------------------------------------------------------

#[test]
fn bad_inputs_are_refused_clearly_and_write_nothing() {
    let root = TempDir::new().unwrap();
    let is_root = running_as_root();
    let cases = cases();
    let filter = std::env::var("BAD_INPUTS_FILTER").ok();
    let mut failures = Vec::new();
    let (mut refused2, mut refused1, mut accepted, mut skipped) = (0, 0, 0, 0);
    for (i, case) in cases.iter().enumerate() {
        let applies = match case.only {
            Only::Always => true,
            Only::Root => is_root,
            Only::NotRoot => !is_root,
        };
        let wanted = filter
            .as_ref()
            .is_none_or(|f| case.name.contains(f.as_str()));
        if !applies || !wanted {
            if !applies {
                println!(
                    "skipped (only {}): {}",
                    if case.only == Only::Root {
                        "as root"
                    } else {
                        "as a user other than root"
                    },
                    case.name
                );
            }
            skipped += 1;
            continue;
        }
        let dir = root.path().join(format!("case-{i:03}"));
        let ctx = Ctx::new(&dir);
        let args = (case.input)(&ctx);
        let before = snapshot(&dir);
        let run = ditail(root.path(), &args);
        let err = String::from_utf8_lossy(&run.stderr).into_owned();
        let code = run.status.code();
        let mut problems = Vec::new();
        match case.expect {
            Refused(want, needles) => {
                if code != Some(want) {
                    problems.push(format!("exit {code:?}, expected {want}"));
                }
                for n in needles {
                    if !err.contains(n) {
                        problems.push(format!("message lacks `{n}`"));
                    }
                }
                if err.contains("panicked") {
                    problems.push("panicked".into());
                }
                let after = snapshot(&dir);
                if after != before {
                    problems.push(format!("wrote something: {}", diff(&before, &after)));
                }
                if code == Some(want) && problems.is_empty() {
                    if want == 2 {
                        refused2 += 1;
                    } else {
                        // exit 1, or a batch's 64 + failed rows
                        refused1 += 1;
                    }
                }
            }
            Accepted(check) => {
                if code != Some(0) {
                    problems.push(format!("exit {code:?}, expected 0"));
                } else if let Err(e) = check(&ctx) {
                    problems.push(e);
                }
                let leftovers: Vec<String> = listing(&ctx.out)
                    .into_iter()
                    .filter(|f| f.starts_with('.'))
                    .collect();
                if !leftovers.is_empty() {
                    problems.push(format!("left temporary files: {leftovers:?}"));
                }
                if problems.is_empty() {
                    accepted += 1;
                }
            }
        }
        let first_line = err
            .lines()
            .find(|l| l.starts_with("error") || l.contains("failed"))
            .unwrap_or("");
        if problems.is_empty() {
            println!(
                "ok   {}: exit {:?}  {first_line}",
                case.name,
                code.unwrap_or(-1)
            );
        } else {
            println!("FAIL {}: {}", case.name, problems.join("; "));
            failures.push(format!(
                "{}: {}\n  args: {args:?}\n  stderr: {err}",
                case.name,
                problems.join("; ")
            ));
        }
    }
    let ran = cases.len() - skipped;
    println!(
        "{ran} cases: {refused2} refused with exit 2, {refused1} with exit 1, {accepted} accepted"
    );
    assert!(
        failures.is_empty(),
        "{} of {ran} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    if filter.is_none() {
        assert!(
            refused2 + refused1 >= 60,
            "the corpus must hold at least 60 refusals"
        );
    }
}

/// The library's side of the first cases: the loader's typed error names the file and the
/// key (the command prints its text).
#[test]
fn a_nan_weight_is_a_typed_error_naming_the_file_and_key() {
    use ditail::models::ModelError;
    use ditail::pipeline::{Model, ModelSpec, PipelineError};
    let tmp = TempDir::new().unwrap();
    let ctx = Ctx::new(tmp.path());
    let m = ctx.model_copy("nan");
    edit_f32(&m.join(VAE), "decoder.conv_in.bias", |v| v[2] = f32::NAN);
    let spec = ModelSpec::new(m.to_str().unwrap());
    let err = Model::load(&spec, &common::cpu(), Default::default()).unwrap_err();
    match err {
        PipelineError::Model(ModelError::NonFiniteWeight { path, key, problem }) => {
            assert_eq!(path, m.join(VAE));
            assert_eq!(key, "decoder.conv_in.bias");
            assert!(problem.starts_with("holds NaN at element 2"), "{problem}");
        }
        other => panic!("expected NonFiniteWeight, got {other}"),
    }
}

/// Latents that overflow f16 stop text-to-image at the step they appear, naming the model,
/// where the run used to finish and decode them to a black image.
#[test]
fn latents_that_overflow_stop_the_run_at_their_step() {
    use burn::tensor::FloatDType;
    use ditail::models::LoadOptions;
    use ditail::pipeline::{GenerationSettings, Model, ModelSpec, PipelineError, generate};
    let tmp = TempDir::new().unwrap();
    let ctx = Ctx::new(tmp.path());
    let m = ctx.model_copy("overflow");
    edit_f32(&m.join(UNET), "conv_out.weight", |v| {
        v.iter_mut().for_each(|x| *x *= 1e5)
    });
    let device = common::cpu();
    let load = |dtype| {
        let spec = ModelSpec::new(m.to_str().unwrap());
        Model::load(&spec, &device, LoadOptions { dtype }).unwrap()
    };
    let run = |model: &Model| {
        let mut steps = 0;
        let settings = GenerationSettings {
            negative_prompt: String::new(),
            steps: 3,
            width: 64,
            height: 64,
            seed: 1,
            ..GenerationSettings::new("a cat")
        };
        let result = generate(model, &settings, &device, &mut |_| {
            steps += 1;
            true
        });
        (result, steps)
    };
    let (result, steps) = run(&load(FloatDType::F16));
    match result {
        Err(PipelineError::NonFiniteLatents {
            phase,
            step,
            total,
            model,
            dtype,
            hint,
        }) => {
            assert_eq!((phase, step, total), ("generation", 1, 3));
            assert_eq!(model, m.to_str().unwrap());
            assert_eq!(dtype, "F16");
            assert!(hint.contains("--dtype f32"), "{hint}");
        }
        other => panic!("expected NonFiniteLatents, got {other:?}"),
    }
    assert_eq!(
        steps, 0,
        "no progress is reported for the step that overflowed"
    );
    // The same model in f32 has the range to finish.
    let (result, steps) = run(&load(FloatDType::F32));
    assert!(result.is_ok() && steps == 3, "{result:?}");
}

/// Runs `ditail --backend cpu ARGS` with a private hash cache and no hub access.
fn ditail(root: &Path, args: &[OsString]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ditail"))
        .args(["--backend", "cpu"])
        .args(args)
        .env("XDG_CACHE_HOME", root.join("cache"))
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", root.join("hf"))
        .output()
        .expect("the ditail binary runs")
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Every path under `dir` with its size and modification time (links not followed).
type Snapshot = BTreeMap<PathBuf, (bool, u64, Option<std::time::SystemTime>)>;

fn snapshot(dir: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path.clone());
            }
            out.insert(
                path.strip_prefix(dir).unwrap().to_path_buf(),
                (meta.is_dir(), meta.len(), meta.modified().ok()),
            );
        }
    }
    out
}

fn diff(before: &Snapshot, after: &Snapshot) -> String {
    let mut changes = Vec::new();
    for (p, v) in after {
        match before.get(p) {
            None => changes.push(format!("new {}", p.display())),
            Some(b) if b != v => changes.push(format!("changed {}", p.display())),
            _ => {}
        }
    }
    for p in before.keys().filter(|p| !after.contains_key(*p)) {
        changes.push(format!("removed {}", p.display()));
    }
    changes.join(", ")
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------
// A case's folder and the inputs written into it
// ---------------------------------------------------------------------------------------

const UNET: &str = "unet/diffusion_pytorch_model.safetensors";
const VAE: &str = "vae/diffusion_pytorch_model.safetensors";
const TEXT: &str = "text_encoder/model.safetensors";
const RTL: &str = "\u{200f}قطة على السجادة, חתול על השטיח\u{200e} (a cat)";
const EMOJI: &str = "a 🐈‍⬛ on a 🛋️ 👩🏽‍🎨🏳️‍🌈 ✨";

struct Ctx {
    /// The case's folder: its inputs, and `out/`.
    dir: PathBuf,
    /// The output folder (made empty before the run).
    out: PathBuf,
}

impl Ctx {
    fn new(dir: &Path) -> Self {
        let out = dir.join("out");
        std::fs::create_dir_all(&out).unwrap();
        Self {
            dir: dir.to_path_buf(),
            out,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn out_png(&self) -> PathBuf {
        self.out.join("out.png")
    }

    fn write(&self, name: &str, bytes: Vec<u8>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn dir(&self, name: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    fn png(&self, name: &str, img: &image::RgbImage) -> PathBuf {
        let p = self.path(name);
        img.save(&p).unwrap();
        p
    }

    /// A copy of the tiny-a diffusers folder named `name`.
    fn model_copy(&self, name: &str) -> PathBuf {
        let to = self.path(name);
        copy_dir(&tiny("tiny-a"), &to);
        to
    }

    /// A copy of the kohya fixture LoRA (which fits tiny-a), edited.
    fn lora(&self, name: &str, edit: impl FnOnce(&mut Tensors)) -> PathBuf {
        let mut t = read_st(&lora_fixture());
        edit(&mut t);
        self.write(name, st_bytes(&t))
    }

    /// A latents file of tiny-a at 64 px and 2 steps, made by the library, then edited.
    fn latents(&self, name: &str, edit: impl FnOnce(&mut Tensors)) -> PathBuf {
        let path = self.path(name);
        let device = common::cpu();
        let model = ditail::pipeline::Model::load(
            &ditail::pipeline::ModelSpec::new(tiny("tiny-a").to_str().unwrap()),
            &device,
            Default::default(),
        )
        .unwrap();
        let mut settings = ditail::pipeline::InversionSettings::new("a cat");
        (settings.steps, settings.size) = (2, 64);
        let image = ditail::pipeline::preprocess::load_rgb(Path::new(&content())).unwrap();
        let inv =
            ditail::pipeline::invert(&model, &image, &settings, &device, &mut |_| true).unwrap();
        ditail::pipeline::latents::save(&path, &inv, None).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let info = meta.metadata().clone();
        let mut t = read_st(&path);
        edit(&mut t);
        let views: Vec<(String, TensorView)> = t
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        std::fs::write(&path, safetensors::serialize(views, info).unwrap()).unwrap();
        path
    }

    /// `name` -> `name.2` -> `name`.
    fn link_loop(&self, name: &str) -> PathBuf {
        let (a, b) = (self.path(name), self.path(&format!("{name}.2")));
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        a
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if src.is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn tiny(name: &str) -> PathBuf {
    model_dir(name)
}

fn content() -> String {
    fixtures()
        .join("pipeline/content.png")
        .display()
        .to_string()
}

fn lora_fixture() -> PathBuf {
    loading("lora-kohya.safetensors")
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// A prompt as Civitai model pages write them.
const CIVITAI: &str = "(masterpiece:1.2), ((best quality)), [blurry], 1girl, \\(cosplay\\), \
     watercolor, a red fox in the snow, soft morning light, pine trees, a frozen lake, \
     mountains far away, (dramatic sky:0.8), intricate details, highly detailed fur, \
     volumetric light BREAK a small bird on a branch";

fn long_prompt() -> String {
    "a cat on a mat, ".repeat(625)
}

/// A transfer command: the fixture content, "a cat", tiny-a, 64 px and 2 + 2 steps.
struct T {
    image: OsString,
    prompt: OsString,
    source: OsString,
    extra: Vec<OsString>,
}

impl T {
    fn new() -> Self {
        Self {
            image: content().into(),
            prompt: "a cat".into(),
            source: tiny("tiny-a").into(),
            extra: Vec::new(),
        }
    }

    fn image(mut self, p: impl Into<OsString>) -> Self {
        self.image = p.into();
        self
    }

    fn prompt(mut self, p: &str) -> Self {
        self.prompt = p.into();
        self
    }

    fn source(mut self, p: impl AsRef<OsStr>) -> Self {
        self.source = p.as_ref().to_owned();
        self
    }

    fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.extra.push(a.into());
        self
    }

    /// The arguments; the output path comes last.
    fn args(self, c: &Ctx) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "transfer".into(),
            self.image,
            "--prompt".into(),
            self.prompt,
            "--source".into(),
            self.source,
        ];
        a.extend(os(&["--size", "64", "--inv-steps", "2", "--steps", "2"]));
        a.extend(self.extra);
        a.push("-o".into());
        a.push(c.out_png().into());
        a
    }
}

fn batch(c: &Ctx, manifest: &Path) -> Vec<OsString> {
    vec![
        "batch".into(),
        manifest.into(),
        "-o".into(),
        c.out.clone().into(),
    ]
}

fn from_latents(c: &Ctx, latents: &Path) -> Vec<OsString> {
    let mut a = os(&["transfer", "--from-latents"]);
    a.push(latents.into());
    a.extend(os(&["--prompt", "a cat", "--target"]));
    a.push(tiny("tiny-a").into());
    a.extend(os(&["--steps", "2", "-o"]));
    a.push(c.out_png().into());
    a
}

/// A CSV manifest with the header `id,image,prompt,source,target,steps,inv_steps,size`.
fn manifest_csv(rows: &[&str]) -> Vec<u8> {
    let mut text = String::from("id,image,prompt,source,target,steps,inv_steps,size\n");
    for r in rows {
        text += r;
        text += "\n";
    }
    text.into_bytes()
}

/// A manifest row (for [`manifest_csv`]) that runs quickly.
fn quick_row(id: &str) -> String {
    format!(
        "{id},{},a cat,{},,2,2,64",
        content(),
        tiny("tiny-a").display()
    )
}

// --- Checks of accepted cases ---

fn png_ok(c: &Ctx) -> Result<(), String> {
    let img = image::open(c.out_png()).map_err(|e| format!("output: {e}"))?;
    let rgb = img.to_rgb8();
    if rgb.pixels().all(|p| p.0 == [0, 0, 0]) {
        return Err("the output is black".into());
    }
    record(&c.out_png()).map(|_| ())
}

fn png_size(c: &Ctx, size: (u32, u32)) -> Result<(), String> {
    png_ok(c)?;
    let got = image::image_dimensions(c.out_png()).map_err(|e| e.to_string())?;
    if got == size {
        Ok(())
    } else {
        Err(format!("output is {got:?}, expected {size:?}"))
    }
}

fn record_prompt(c: &Ctx, prompt: &str) -> Result<(), String> {
    png_ok(c)?;
    let rec = record(&c.out_png())?;
    expect_eq(&rec["prompt"], prompt)?;
    expect_eq(&rec["ditail"]["inv_prompt"], prompt)
}

fn expect_eq(got: &Value, want: &str) -> Result<(), String> {
    if got.as_str() == Some(want) {
        Ok(())
    } else {
        Err(format!(
            "recorded {:.80}, expected {want:.80}",
            got.to_string()
        ))
    }
}

fn out_files(c: &Ctx, expected: &[&str]) -> Result<(), String> {
    let got = listing(&c.out);
    if got != expected {
        return Err(format!(
            "output folder holds {got:?}, expected {expected:?}"
        ));
    }
    for f in expected {
        image::open(c.out.join(f)).map_err(|e| format!("{f}: {e}"))?;
    }
    Ok(())
}

/// The `ditail` chunk of an output PNG.
fn record(path: &Path) -> Result<Value, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .map_err(|e| e.to_string())?;
    let text = reader
        .info()
        .utf8_text
        .iter()
        .find(|c| c.keyword == "ditail")
        .ok_or("no ditail chunk")?
        .get_text()
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

// --- Images ---

fn rgb(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 7 % 256) as u8, (y * 5 % 256) as u8, 128])
    })
}

fn white(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]))
}

fn jpeg(img: &image::RgbImage) -> Vec<u8> {
    let mut b = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut b, 90)
        .encode_image(img)
        .unwrap();
    b
}

/// Rewrites the frame header (SOF0) of a baseline JPEG to claim `w` x `h`.
fn set_jpeg_size(jpeg: &mut [u8], w: u16, h: u16) {
    let sof = jpeg
        .windows(2)
        .position(|m| m == [0xff, 0xc0])
        .expect("a baseline JPEG");
    jpeg[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend(data);
    out.extend(&body);
    out.extend(crc32(&body).to_be_bytes());
}

/// A valid PNG (signature, IHDR, a little IDAT, IEND) whose header claims `w` x `h` RGB:
/// a few hundred bytes that would decode to gigabytes.
fn png_bomb(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    // zlib's encoding of one zero byte: the first row's filter byte, then the data ends.
    png_chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01],
    );
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// A baseline JPEG with four components and Adobe's APP14 marker saying CMYK (no
/// transform), as print workflows write: every block holds only its DC term.
fn cmyk_jpeg(w: u16, h: u16) -> Vec<u8> {
    let mut b = vec![0xff, 0xd8];
    let mut segment = |marker: u8, body: &[u8]| {
        b.extend([0xff, marker]);
        b.extend(((body.len() + 2) as u16).to_be_bytes());
        b.extend(body);
    };
    segment(0xee, b"Adobe\x00\x64\x00\x00\x00\x00\x00");
    let mut dqt = vec![0x00];
    dqt.extend([1u8; 64]);
    segment(0xdb, &dqt);
    let mut sof = vec![8];
    sof.extend(h.to_be_bytes());
    sof.extend(w.to_be_bytes());
    sof.push(4);
    for id in 1..=4 {
        sof.extend([id, 0x11, 0x00]);
    }
    segment(0xc0, &sof);
    // One-symbol Huffman tables: DC category 0 and AC end-of-block, each the code `0`.
    for class in [0x00, 0x10] {
        let mut dht = vec![class, 1];
        dht.extend([0u8; 15]);
        dht.push(0x00);
        segment(0xc4, &dht);
    }
    let mut sos = vec![4];
    for id in 1..=4 {
        sos.extend([id, 0x00]);
    }
    sos.extend([0, 63, 0]);
    segment(0xda, &sos);
    // Each MCU: 4 blocks of 2 bits (DC 0, EOB), one zero byte.
    let mcus = usize::from(w.div_ceil(8)) * usize::from(h.div_ceil(8));
    b.extend(vec![0u8; mcus]);
    b.extend([0xff, 0xd9]);
    b
}

// --- safetensors files ---

/// Tensors as (key, dtype, shape, little-endian bytes).
type Tensors = Vec<(String, Dtype, Vec<usize>, Vec<u8>)>;

fn read_st(path: &Path) -> Tensors {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut t: Tensors = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

fn st_bytes(t: &Tensors) -> Vec<u8> {
    let views: Vec<(String, TensorView)> = t
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn write_st(path: &Path, t: &Tensors) {
    std::fs::write(path, st_bytes(t)).unwrap();
}

/// 8-byte little-endian header length, the header, the data.
fn raw_st(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend(header.as_bytes());
    b.extend(data);
    b
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn le(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Makes a model folder's U-Net take `config` input channels by its config and `weight`
/// by its `conv_in.weight` (zeros in the new channels), as an inpainting (9),
/// instruct-pix2pix (8) or depth (5) U-Net is.
fn unet_inputs(model: &Path, config: usize, weight: usize) {
    let config_path = model.join("unet/config.json");
    let mut json: Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    json["in_channels"] = json!(config);
    std::fs::write(&config_path, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    let path = model.join(UNET);
    let mut t = read_st(&path);
    let (_, _, shape, bytes) = t
        .iter_mut()
        .find(|(n, ..)| n == "conv_in.weight")
        .expect("conv_in.weight");
    let (out, inp, kh, kw) = (shape[0], shape[1], shape[2], shape[3]);
    let old = f32s(bytes);
    let mut new = vec![0f32; out * weight * kh * kw];
    for o in 0..out {
        for i in 0..inp.min(weight) {
            let (from, to) = ((o * inp + i) * kh * kw, (o * weight + i) * kh * kw);
            new[to..to + kh * kw].copy_from_slice(&old[from..from + kh * kw]);
        }
    }
    *shape = vec![out, weight, kh, kw];
    *bytes = le(&new);
    write_st(&path, &t);
}

/// Edits an f32 tensor of a file in place.
fn edit_f32(path: &Path, key: &str, edit: impl FnOnce(&mut Vec<f32>)) {
    let mut t = read_st(path);
    let e = t.iter_mut().find(|e| e.0 == key).expect("the key exists");
    assert_eq!(e.1, Dtype::F32);
    let mut v = f32s(&e.3);
    edit(&mut v);
    e.3 = le(&v);
    write_st(path, &t);
}

/// Edits an f16 tensor of a tensor list.
fn edit_f16(t: &mut Tensors, key: &str, edit: impl FnOnce(&mut Vec<f32>)) {
    let e = t.iter_mut().find(|e| e.0 == key).expect("the key exists");
    assert_eq!(e.1, Dtype::F16);
    let mut v: Vec<f32> =
        e.3.chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect();
    edit(&mut v);
    e.3 = v
        .iter()
        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
        .collect();
}

/// Changes a tensor's dtype to another of the same width (f32 to i32), keeping its bytes.
fn retype(path: &Path, key: &str, dtype: Dtype) {
    let mut t = read_st(path);
    t.iter_mut().find(|e| e.0 == key).unwrap().1 = dtype;
    write_st(path, &t);
}

/// Sets (adds or replaces) a tensor.
fn set(t: &mut Tensors, key: &str, dtype: Dtype, shape: &[usize], bytes: &[u8]) {
    t.retain(|e| e.0 != key);
    t.push((key.into(), dtype, shape.to_vec(), bytes.to_vec()));
}

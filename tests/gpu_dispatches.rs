//! Kernel dispatches on wgpu (in CI: lavapipe; the counts are the same on a GPU for one
//! build and shapes): the layers the U-Net repeats take as few kernels as burn's fusion
//! can give them, and `gpu::profile_dispatches`, what `examples/gpu_counts.rs --profile`
//! reports on a GPU, times every launch on the kernel that took it.
//!
//! Its own binary, the tests one at a time: the launch observer is process-wide, and
//! another test's kernels running meanwhile would be counted in.

mod common;

use std::sync::Mutex;

use burn::nn::conv::Conv2dConfig;
use burn::nn::{GroupNormConfig, LayerNormConfig, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::module;
use burn::tensor::{DType, Distribution, FloatDType};
use common::attention::{Case, MaskKind, Source, inputs};
use ditail::models::cast::cast_floats;
use ditail::models::gpu::{Dispatches, count_dispatches, profile_dispatches};
use ditail::models::kernels::attention::{AttentionChoice, attention, force_choice};
use ditail::models::kernels::conv::{conv2d, conv2d_upscaled};
use ditail::models::kernels::linear::linear;
use ditail::models::kernels::{group_norm::group_norm, layer_norm::layer_norm};
use ditail::models::resnet::ResnetBlock2dConfig;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The dispatches of `work`'s third run. The first compiles and tunes; it also runs what
/// was still pending in the fused stream (a layer's cast to f16), which can join its kernels
/// into other shapes than later runs have, and those are tuned in the second (seen on an
/// empty tuning cache through SPIR-V: a product's 13 candidates counted).
fn dispatches(device: &Device, work: impl Fn()) -> Dispatches {
    work();
    work();
    count_dispatches(device, &work).1
}

/// The U-Net's repeated layers in f16 on wgpu, each followed by a read (which ends the
/// fused stream), and the most kernels each may take. Under burn's fusion a reshape between
/// element-wise steps ends their fused kernel, and a reshape between a product and its bias
/// add ends the product's fused epilogue: the layers' code orders its steps so that
/// neither happens (2026-12-07: a linear layer took 2 dispatches, a GroupNorm + SiLU 4, 9
/// for groups over 4096 values, a LayerNorm 6, a 3x3 convolution 4). The norms are one
/// kernel each, two where long groups are split over more cubes (`kernels::segment_norm`;
/// in burn's fused ops they took 3 to 5, as autotune chose), and so is a whole ResNet block
/// but for its convolutions and time embedding.
#[test]
fn the_unets_layers_fuse_into_few_dispatches() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let device = common::wgpu_device();
    let f16 = FloatDType::F16;
    let normal = Distribution::Normal(0.0, 1.0);
    let tokens = Tensor::<3>::random([3, 256, 320], normal, &device).cast(DType::F16);
    let map = |side| Tensor::<4>::random([3, 320, side, side], normal, &device).cast(DType::F16);

    let lin = cast_floats(LinearConfig::new(320, 320).init(&device), f16);
    let d = dispatches(&device, || {
        linear(&lin, tokens.clone()).into_data();
    });
    assert_eq!(d.total, 1, "linear + bias: {d:?}");

    let ln = cast_floats(LayerNormConfig::new(320).init(&device), f16);
    let d = dispatches(&device, || {
        layer_norm(&ln, 1e-5, tokens.clone()).into_data();
    });
    assert_eq!(d.total, 1, "layer norm: {d:?}");

    let gn = cast_floats(GroupNormConfig::new(32, 320).init(&device), f16);
    // 2560 values a group: one kernel, one cube a group. 40960 (SD1.5's first level at
    // 512 px): 96 groups are too few cubes, so each is split in three chunks, two kernels
    // (the chunks' moments, then the normalisation; `segment_norm::chunks_per_segment`).
    for (side, kernels) in [(16, 1), (64, 2)] {
        let x = map(side);
        let d = dispatches(&device, || {
            group_norm(&gn, x.clone(), true).into_data();
        });
        assert_eq!(
            d.total, kernels,
            "group norm + SiLU at {side}x{side}: {d:?}"
        );
    }

    // A half-precision 3x3 convolution (im2col): the columns (one kernel, the padding as
    // bounds checks) and one product with the bias in its epilogue.
    let conv = cast_floats(
        Conv2dConfig::new([320, 320], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(&device),
        f16,
    );
    let x = map(16);
    let d = dispatches(&device, || {
        conv2d(&conv, x.clone()).into_data();
    });
    assert!(d.total <= 2, "3x3 convolution: {d:?}");
    // An upsampler's: the enlargement in the gather (2026-12-07: two more kernels, the
    // enlarged map's two gathers).
    let d = dispatches(&device, || {
        conv2d_upscaled(&conv, x.clone(), 2).into_data();
    });
    assert!(
        d.total <= 2,
        "3x3 convolution over a map enlarged twice: {d:?}"
    );

    // A ResNet block with the time embedding and a 1x1 shortcut (an up block's): two
    // norms, two gathers, the four products (the time embedding's, the two convolutions',
    // the shortcut's) with the adds in their epilogues (2026-12-07: 20, the norms' 8 and
    // the time embedding's copy and add, the shortcut's add where its product came between
    // conv2's gather and product; 9 with the time embedding's SiLU, which the U-Net now
    // takes once a step).
    let block = ResnetBlock2dConfig {
        in_channels: 640,
        out_channels: 320,
        temb_channels: Some(1280),
        groups: 32,
        eps: 1e-5,
    };
    let block = cast_floats(block.init(&device), f16);
    let x = Tensor::<4>::random([3, 640, 8, 8], normal, &device).cast(DType::F16);
    let temb = Tensor::<2>::random([3, 1280], normal, &device).cast(DType::F16);
    let d = dispatches(&device, || {
        block
            .forward(x.clone(), Some(temb.clone()), None)
            .into_data();
    });
    assert!(d.total <= 8, "ResNet block: {d:?}");

    // As an up block runs it: the time projection queued first, then the concatenation
    // with the skip (one element-wise kernel), then the block (2026-12-07: one kernel more,
    // the projection's bias add, where the projection came after the concatenation).
    let half = || Tensor::<4>::random([3, 320, 8, 8], normal, &device).cast(DType::F16);
    let (a, b) = (half(), half());
    let d = dispatches(&device, || {
        let t = block.time_projection(Some(temb.clone()));
        let input = Tensor::cat(vec![a.clone(), b.clone()], 1);
        block.forward_projected(input, t, None).into_data();
    });
    assert!(d.total <= 9, "concatenation and ResNet block: {d:?}");
}

/// The transformers' projections between the feature map and tokens
/// (`kernels::tokens`) take the layout change in their products: one kernel each, with the
/// bias (and on the way back the residual) in the product's epilogue, and a linear layer
/// after the way in flattens the tokens without a copy. A whole SD1.5 and SDXL transformer
/// has no layout copy left (2026-12-07: two each, 32 of the 38 copies in an SD1.5 U-Net
/// step).
#[test]
fn the_projections_change_layout_in_their_products() {
    use ditail::models::attention::Transformer2dConfig;
    use ditail::models::kernels::tokens::{Pointwise, from_tokens_add, to_tokens};
    use ditail::models::{NoControl, Site, Stage};
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let device = common::wgpu_device();
    let f16 = FloatDType::F16;
    let normal = Distribution::Normal(0.0, 1.0);
    let map = Tensor::<4>::random([3, 320, 8, 8], normal, &device).cast(DType::F16);
    let conv = cast_floats(Conv2dConfig::new([320, 320], [1, 1]).init(&device), f16);
    let lin = cast_floats(LinearConfig::new(320, 320).init(&device), f16);
    for layer in [Pointwise::Conv(&conv), Pointwise::Linear(&lin)] {
        let d = dispatches(&device, || {
            to_tokens(layer, map.clone()).into_data();
        });
        assert_eq!(d.total, 1, "{layer:?} into tokens: {d:?}");
        let d = dispatches(&device, || {
            linear(&lin, to_tokens(layer, map.clone())).into_data();
        });
        assert_eq!(
            d.total, 2,
            "{layer:?} into tokens, then a linear layer: {d:?}"
        );
        let tokens = to_tokens(layer, map.clone());
        let d = dispatches(&device, || {
            from_tokens_add(layer, tokens.clone(), [8, 8], map.clone()).into_data();
        });
        assert_eq!(d.total, 1, "{layer:?} back onto the map: {d:?}");
    }

    let context = Tensor::<3>::random([3, 77, 768], normal, &device).cast(DType::F16);
    let site = Site::SelfAttn {
        stage: Stage::Down,
        block: 0,
        layer: 0,
        depth: 0,
    };
    for linear_projection in [false, true] {
        let config =
            Transformer2dConfig::new(320, 8, 768, 32).with_linear_projection(linear_projection);
        let transformer = cast_floats(config.init(&device), f16);
        let d = dispatches(&device, || {
            let y = transformer.forward(map.clone(), &context, site, &mut NoControl);
            y.into_data();
        });
        let copies = d.by_kernel.get("CopyKernelPack").copied().unwrap_or(0);
        assert_eq!(
            copies, 0,
            "transformer, linear projections {linear_projection}: {d:?}"
        );
    }
}

/// A run's steps read the cross-attention's keys and values that its first step projected
/// (`UNet2DConditionModel::prepare`, `models::cross_kv`): a prepared forward after the
/// first takes two products fewer per transformer block than a plain forward, and for SDXL
/// none for the added embedding; prepared for the run's timesteps, none for the time
/// embedding either (2026-12-07: every forward made them again). On the flash
/// path (SPIR-V, MSL, CUDA; forced here for tiny-a on WGSL) they are kept laid out per
/// head, and the attention's two layout kernels a block go too (2026-12-07: 2 a block).
#[test]
fn a_prepared_conditioning_projects_the_text_once() {
    use ditail::models::load::load_unet;
    use ditail::models::{AddedConditioning, Conditioning, LoadOptions, NoControl};
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _back = ChoiceGuard;
    let device = common::wgpu_device();
    let options = LoadOptions {
        dtype: FloatDType::F16,
    };
    let auto = common::MODELS
        .into_iter()
        .chain(["tiny-xl"])
        .map(|m| (m, None));
    for (model, choice) in auto.chain([("tiny-a", Some(AttentionChoice::Flash))]) {
        force_choice(choice);
        let dir = common::model_dir(model).join("unet");
        let (unet, config) = load_unet(&dir, &device, options).unwrap();
        let blocks: usize = (unet.down_blocks.iter().flat_map(|b| &b.attentions))
            .chain(&unet.mid_block.attentions)
            .chain(unet.up_blocks.iter().flat_map(|b| &b.attentions))
            .map(|t| t.transformer_blocks.len())
            .sum();
        assert!(blocks > 0, "{model}: no transformer blocks");
        let normal = Distribution::Normal(0.0, 1.0);
        let x = Tensor::<4>::random([3, config.in_channels, 8, 8], normal, &device);
        let x = x.cast(DType::F16);
        let tokens = [3, 77, config.cross_attention_dim];
        let context = Tensor::<3>::random(tokens, normal, &device).cast(DType::F16);
        // SDXL's pooled text and sizes (64 px, uncropped).
        let pooled = config
            .projection_class_embeddings_input_dim
            .zip(config.addition_time_embed_dim)
            .map(|(input, t)| input - 6 * t);
        let cond = Conditioning {
            context,
            added: pooled.map(|width| AddedConditioning {
                text_embeds: Tensor::<2>::random([3, width], normal, &device).cast(DType::F16),
                time_ids: Tensor::<2>::from_data(
                    TensorData::new([64.0f32, 64.0, 0.0, 0.0, 64.0, 64.0].repeat(3), [3, 6]),
                    (&device, DType::F16),
                ),
            }),
        };
        assert_eq!(
            cond.added.is_some(),
            unet.has_added_conditioning(),
            "{model}"
        );
        let plain = dispatches(&device, || {
            let out = unet.forward(x.clone(), 981.0, cond.clone(), &mut NoControl);
            out.into_data();
        });
        // A run of 20 steps; `dispatches` counts the third forward at 981, its fourth
        // (rows not at the start of the table).
        let run: Vec<f32> = (0..20).map(|i| 1131.0 - 50.0 * i as f32).collect();
        let prepared = unet.prepare(cond.clone()).for_timesteps(&run);
        let kept = dispatches(&device, || {
            prepared
                .forward(x.clone(), 981.0, &mut NoControl)
                .into_data();
        });
        let cache = prepared.keys_values();
        assert_eq!(cache.len(), blocks, "{model}");
        let resnets = (unet.down_blocks.iter().flat_map(|b| &b.resnets))
            .chain(&unet.mid_block.resnets)
            .chain(unet.up_blocks.iter().flat_map(|b| &b.resnets))
            .filter(|r| r.time_emb_proj.is_some())
            .count();
        assert_eq!(prepared.time_projections(), resnets, "{model}");
        // A step's rows of an 8-wide projection (tiny-xl's first level; 16 bytes a row in
        // f16) are copied out of the table before the convolution adds them, a slice kernel
        // for the product spared (lavapipe, 2026-12-07); from 16 wide, and SD's 320 and
        // up, the convolution reads them where they are.
        let wide = (unet.down_blocks.iter().flat_map(|b| &b.resnets))
            .chain(&unet.mid_block.resnets)
            .chain(unet.up_blocks.iter().flat_map(|b| &b.resnets))
            .filter_map(|r| r.time_emb_proj.as_ref())
            .filter(|p| p.weight.dims()[1] >= 16)
            .count();
        // Laid out per head exactly where the flash path runs: forced, or SPIR-V's default
        // (`scripts/test_spirv.sh` runs this test there).
        let compiler = ditail::models::gpu::info(&device).expect("a GPU").compiler;
        let flash = choice == Some(AttentionChoice::Flash)
            || compiler != ditail::models::gpu::WGSL_COMPILER;
        let laid_out = if flash { blocks } else { 0 };
        assert_eq!(cache.per_head(), laid_out, "{model}, {choice:?}");
        eprintln!(
            "{model} ({choice:?}): {blocks} transformer blocks; plain forward {} kernels, \
             prepared {}",
            plain.total, kept.total
        );
        // Each projection is one product here (no bias), each layout one copy; at least,
        // where a device's tuning chose a product of several kernels. SDXL's added
        // embedding (a concatenation and two products) is also made once, and so are the
        // time MLP's two products and each ResNet's projection of its output (each wide
        // one's).
        let added = if unet.has_added_conditioning() { 3 } else { 0 };
        let per_block = if flash { 4 } else { 2 };
        assert!(
            kept.total + per_block * blocks + added + 2 + wide <= plain.total,
            "{model} ({choice:?}), {blocks} transformer blocks, {resnets} ResNets: prepared \
             {kept:?}, plain {plain:?}"
        );
    }
}

/// Puts the attention choice back when a test ends, passed or failed.
struct ChoiceGuard;

impl Drop for ChoiceGuard {
    fn drop(&mut self) {
        force_choice(None);
    }
}

/// Ditail's attention on the flash path (what SPIR-V, MSL and CUDA run; forced here on
/// WGSL): q, k and v laid out per head with the q/k mix and the padding of 40-wide heads
/// to cubek's tiles in one kernel each, the attention, and one copy of its output back
/// into tokens: 4 kernels besides the attention's own (2026-12-07: in tensor ops they were
/// 22 for SD1.5's first level with an injection, 12 without one, 10 for its second level
/// with a captured source).
#[test]
fn the_flash_attention_takes_a_kernel_per_operand() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _back = ChoiceGuard;
    force_choice(Some(AttentionChoice::Flash));
    let device = common::wgpu_device();
    let normal = Distribution::Normal(0.0, 1.0);
    let case = |heads, head_dim, n_kv, source| Case {
        batch: 3,
        heads,
        head_dim,
        n_q: 64,
        n_kv,
        source,
    };
    for c in [
        // SD1.5's first level: self-attention injected under a mask, and cross-attention.
        case(8, 40, 64, Source::InBatch(MaskKind::Left)),
        case(8, 40, 77, Source::None),
        // Its second level, captured source, graded mask; no padding.
        case(8, 80, 64, Source::Captured(MaskKind::Image)),
    ] {
        let i = inputs(c, &device, DType::F16);
        let d = dispatches(&device, || {
            let (q, k, v) = (i.q.clone(), i.k.clone(), i.v.clone());
            attention(q, k, v, c.heads, i.inject.clone()).into_data();
        });
        // burn's attention alone on the operands the flash path hands it (cubek's kernel
        // on a GPU; what autotune picks here on lavapipe).
        let width = c.head_dim.next_multiple_of(16);
        let per_head = |n| Tensor::<4>::random([3, c.heads, n, width], normal, &device);
        let (q, k, v) = (per_head(64), per_head(c.n_kv), per_head(c.n_kv));
        let (q, k, v) = (q.cast(DType::F16), k.cast(DType::F16), v.cast(DType::F16));
        let alone = dispatches(&device, || {
            let (q, k, v) = (q.clone(), k.clone(), v.clone());
            module::attention(q, k, v, None, None, Default::default()).into_data();
        });
        assert!(
            d.total <= alone.total + 4,
            "{c:?}: {d:?}, the attention alone {alone:?}"
        );
    }
}

/// Over a cross-attention's keys and values laid out beforehand (`KeysValues`, what a run
/// keeps), the flash attention takes its two layout kernels fewer; and where the attention
/// that runs is not the flash path after all (the choice changed in between), it lays
/// them back and gives the reference's values.
#[test]
fn keys_values_laid_out_once_spare_the_flash_path_two_kernels() {
    use ditail::models::kernels::attention::{KeysValues, attention_over, attention_reference};
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _back = ChoiceGuard;
    force_choice(Some(AttentionChoice::Flash));
    let device = common::wgpu_device();
    // SD1.5's first level's cross-attention: 40-wide heads, padded.
    let c = Case {
        batch: 3,
        heads: 8,
        head_dim: 40,
        n_q: 64,
        n_kv: 77,
        source: Source::None,
    };
    let i = inputs(c, &device, DType::F16);
    let kv = KeysValues::new(i.k.clone(), i.v.clone(), c.heads);
    assert!(kv.per_head());
    let plain = dispatches(&device, || {
        let (q, k, v) = (i.q.clone(), i.k.clone(), i.v.clone());
        attention(q, k, v, c.heads, None).into_data();
    });
    let over = dispatches(&device, || {
        attention_over(i.q.clone(), kv.clone(), c.heads).into_data();
    });
    assert!(
        over.total + 2 <= plain.total,
        "laid out beforehand {over:?}, in the call {plain:?}"
    );

    force_choice(Some(AttentionChoice::Reference));
    let got = attention_over(i.q.clone(), kv, c.heads).into_data();
    let want = attention_reference(i.q, i.k, i.v, c.heads, None).into_data();
    common::assert_close("laid back", &got, &want, 1e-3);
}

/// Runs `work` once to warm up (autotune, compilation), then profiles and counts it.
fn measure(device: &Device, work: impl Fn()) -> (Dispatches, Dispatches) {
    work();
    let ((), timed) = profile_dispatches(device, &work);
    let ((), counted) = count_dispatches(device, &work);
    (timed, counted)
}

#[test]
fn profiling_times_every_launch_on_the_kernel_that_took_it() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let device = common::wgpu_device();
    let a = Tensor::<2>::random([512, 512], Distribution::Normal(0.0, 1.0), &device);
    let b = Tensor::<2>::random([512, 512], Distribution::Normal(0.0, 1.0), &device);
    let small = Tensor::<1>::from_floats([1.0, 2.0, 3.0, 4.0], &device);

    let (product, product_counted) = measure(&device, || {
        a.clone().matmul(b.clone()).into_data();
    });
    let (sum, _) = measure(&device, || {
        (small.clone() + 1.0).into_data();
    });

    for (what, d) in [("product", &product), ("sum", &sum)] {
        let t = d
            .times
            .as_ref()
            .expect("profile_dispatches times the launches");
        assert!(d.total > 0, "{what}: no launch observed");
        assert_eq!(t.measured + t.unmeasured, d.total, "{what}: {d:?}");
        assert!(t.measured > 0, "{what}: nothing measured: {d:?}");
        for name in t.by_kernel.keys() {
            assert!(
                d.by_kernel.contains_key(name),
                "{what}: {name} timed, not counted"
            );
        }
        assert!(t.busy() > std::time::Duration::ZERO, "{what}: {d:?}");
        if t.device_clock {
            // One queue: the kernels run one after another inside the span.
            let slack = std::time::Duration::from_micros(50);
            assert!(
                t.busy() <= t.span + slack,
                "{what}: busy beyond the span: {t:?}"
            );
        }
    }
    // Counting alone times nothing and counts the same launches.
    assert!(product_counted.times.is_none());
    assert_eq!(product_counted.by_kernel, product.by_kernel);

    // 134M multiply-adds against four additions: the product's time is on its kernels.
    let busy = |d: &Dispatches| d.times.as_ref().unwrap().busy();
    assert!(
        busy(&product) > 20 * busy(&sum),
        "product {:?} against sum {:?}: {product:?} {sum:?}",
        busy(&product),
        busy(&sum)
    );
    let times = &product.times.as_ref().unwrap().by_kernel;
    let (slowest, _) = times.iter().max_by_key(|(_, t)| **t).unwrap();
    assert!(
        slowest.to_lowercase().contains("matmul"),
        "the product's time is not on a matmul kernel: {times:?}"
    );
}

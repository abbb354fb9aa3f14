//! f16 on the GPU backend at Stable Diffusion's full sizes (in CI: wgpu on Mesa's lavapipe,
//! which has shaderFloat16), against f32 on the CPU.
//!
//! SD's GroupNorm groups hold 10^4 to 10^6 values at 512 px (the VAE decoder's 256-channel
//! 256x256 maps: 8 channels x 65536 = 524288 per group). A sum of their squares overflows
//! f16 (65504) many times over, so every GPU reduction must accumulate in f32; the tiny
//! models' groups (a few hundred values) never reach that. Inputs here have an offset and a
//! spread like real activations (mean 40, std 20: sum of squares ~1e9 per group).
//!
//! Also the convolutions and linear layers at SD's widest shapes, which must accumulate f16
//! products in f32 too (burn's direct convolution did not: `conv::im2col`'s docs).
//!
//! The full-size networks are `#[ignore]`d (on lavapipe on 2 cores SD1.5's U-Net takes ~3
//! minutes with a warm tuning cache, its f16 VAE decode at 512 px more than 20 minutes and
//! 12 GB, lavapipe compiling and tuning each shape; SDXL's U-Net ~5 minutes and ~17 GB):
//! `cargo test --test gpu_f16 -- --ignored --nocapture` (the dev profile builds the
//! dependencies optimised). They hold the f16 run to the f32 one with the same f16-rounded
//! weights and inputs, so what they measure is the backend's f16 arithmetic, not the
//! rounding of the weights.

mod common;

use burn::module::{Module, Param};
use burn::nn::conv::Conv2dConfig;
use burn::nn::{GroupNormConfig, LayerNormConfig, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::{DType, Distribution, FloatDType};
use common::{assert_close, cpu, wgpu_device};
use ditail::models::cast::cast_floats;
use ditail::models::kernels::conv::{conv2d, conv2d_upscaled};
use ditail::models::kernels::group_norm::group_norm;
use ditail::models::kernels::layer_norm::layer_norm;
use ditail::models::kernels::linear::linear;
use ditail::models::{AddedConditioning, Conditioning, NoControl, UNetConfig, VaeConfig};

/// Largest difference against the f32 CPU result, relative to its largest magnitude: the
/// f16 output's own rounding (2^-11 relative) and the input's, a few times over.
const TOL_NORM: f32 = 4e-3;

/// `[1, channels, side, side]` activations with a per-channel offset around 40.
fn activations(channels: usize, side: usize) -> Tensor<4> {
    let device = cpu();
    let offsets = Tensor::<1>::random([channels], Distribution::Normal(40.0, 5.0), &device);
    Tensor::<4>::random(
        [1, channels, side, side],
        Distribution::Normal(0.0, 20.0),
        &device,
    ) + offsets.reshape([1, channels, 1, 1])
}

#[test]
fn group_norm_in_f16_holds_at_sd_group_sizes() {
    group_norm_at_sd_group_sizes(DType::F16, TOL_NORM);
}

/// The same in f32 (1e-4: f32 rounding of a 524288-value reduction).
#[test]
fn group_norm_in_f32_holds_at_sd_group_sizes() {
    group_norm_at_sd_group_sizes(DType::F32, 1e-4);
}

fn group_norm_at_sd_group_sizes(dtype: DType, tol: f32) {
    let gpu = wgpu_device();
    // (groups, channels, side): the VAE decoder's 512 px up-block (524288 values a group)
    // and the U-Net's first level at 64x64 latents (10 channels x 4096 = 40960), one image
    // each: 32 groups, too few cubes for one a group, so the kernel splits each group into
    // chunks (`segment_norm::chunks_per_segment`: 8 and 5 here); and 256 groups of 16384
    // values, enough to take one cube each (the kernel's other form, as at batch 8).
    for (groups, channels, side) in [(32, 256, 256), (32, 320, 64), (256, 256, 128)] {
        let mut norm = GroupNormConfig::new(groups, channels)
            .with_epsilon(1e-6)
            .init(&cpu());
        let gamma = Tensor::<1>::random([channels], Distribution::Normal(1.0, 0.3), &cpu());
        let beta = Tensor::<1>::random([channels], Distribution::Normal(0.0, 0.3), &cpu());
        norm.gamma = Some(Param::from_tensor(gamma));
        norm.beta = Some(Param::from_tensor(beta));
        let x = activations(channels, side);
        // The reference sees the rounded input the GPU sees.
        let x = x.cast(dtype).cast(DType::F32);
        for silu in [false, true] {
            let want = group_norm(&norm, x.clone(), silu).into_data();
            let norm_gpu = cast_floats(norm.clone().fork(&gpu), dtype.into());
            let got = group_norm(&norm_gpu, x.clone().to_device(&gpu).cast(dtype), silu);
            assert_eq!(got.dtype(), dtype);
            let rel = assert_close(
                &format!("group norm {dtype:?} {groups}/{channels}x{side}x{side} silu {silu}"),
                &got.cast(DType::F32).into_data(),
                &want,
                tol,
            );
            eprintln!(
                "group norm {dtype:?} {groups} groups {channels} ch {side}x{side} silu {silu}: \
                 rel err {rel:e}"
            );
        }
    }
}

/// The transformer blocks' LayerNorm in f16 (`kernels::layer_norm`: f32 statistics, the
/// affine after narrowing) against burn's LayerNorm in f32 on the CPU, at SD1.5's widest
/// (1280 channels) with activations of mean 40 and spread 20 (sum of squares ~2e6 a
/// token, which f16 cannot hold), and with a non-trivial affine.
#[test]
fn layer_norm_in_f16_holds_against_burns_in_f32() {
    let gpu = wgpu_device();
    let (d, tokens) = (1280, 256);
    let mut norm = LayerNormConfig::new(d).init(&cpu());
    norm.gamma = Param::from_tensor(Tensor::random([d], Distribution::Normal(1.0, 0.3), &cpu()));
    norm.beta = Some(Param::from_tensor(Tensor::random(
        [d],
        Distribution::Normal(0.0, 0.3),
        &cpu(),
    )));
    let (half, widened) = rounded(norm);
    let x =
        round(Tensor::<3>::random([2, tokens, d], Distribution::Normal(0.0, 20.0), &cpu()) + 40.0);
    // burn's own forward, f32 (the CPU path, which `layer_norm` leaves to burn in f32).
    let want = widened.forward(x.clone()).into_data();
    let same = layer_norm(&widened, 1e-5, x.clone()).into_data();
    assert_eq!(same, want, "f32 takes burn's LayerNorm as it is");
    let got = layer_norm(&half.fork(&gpu), 1e-5, x.to_device(&gpu).cast(DType::F16));
    assert_eq!(got.dtype(), DType::F16);
    let rel = assert_close(
        "layer norm f16",
        &got.cast(DType::F32).into_data(),
        &want,
        TOL_NORM,
    );
    eprintln!("layer norm f16 {d} channels: rel err {rel:e}");
}

/// `module`'s weights rounded to f16: the f16 module (on the CPU, to move to the GPU) and
/// the same weights widened back to f32, so the f32 reference differs from the f16 run only
/// by the f16 arithmetic and activations, not by the weights' rounding (which is the
/// checkpoint's, not the backend's).
fn rounded<M: Module + Clone>(module: M) -> (M, M) {
    let half = cast_floats(module, FloatDType::F16);
    let widened = cast_floats(half.clone(), FloatDType::F32);
    (half, widened)
}

/// `t` rounded to f16 and widened back, on its device.
fn round<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    t.cast(DType::F16).cast(DType::F32)
}

/// Checks an f16 result against the f32 one and says how far apart they are: the largest
/// difference relative to the largest magnitude (held to `tol`) and the RMS difference
/// relative to the RMS value.
fn compare(what: &str, got: Tensor<4>, want: &TensorData, tol: f32) {
    let got = got.cast(DType::F32).into_data();
    let (g, w) = (floats(&got), floats(want));
    let worst = g
        .iter()
        .zip(&w)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    let scale = w.iter().fold(0f32, |m, b| m.max(b.abs()));
    eprintln!(
        "{what}: f16 on the GPU vs f32 on the CPU (same f16-rounded weights and inputs): max \
         {:.2e} of max |want|, RMS {:.2e} of RMS want",
        worst / scale,
        rms_of(&g, &w)
    );
    assert_close(what, &got, want, tol);
}

/// `data`'s values as f32.
fn floats(data: &TensorData) -> Vec<f32> {
    data.clone().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// The RMS difference of `got` from `want`, relative to the RMS of `want` (sums in f64).
fn rms_of(got: &[f32], want: &[f32]) -> f32 {
    let diff: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum();
    let norm: f64 = want.iter().map(|b| f64::from(*b).powi(2)).sum();
    (diff / norm).sqrt() as f32
}

/// SD1.5's full-size U-Net (burn's random initialisation) at 64x64 latents and its VAE
/// decoder at 512 px, f16 on the GPU against f32 on the CPU.
#[test]
#[ignore = "full-size SD1.5 on lavapipe: the VAE part takes > 20 min and > 12 GB there; cargo test --test gpu_f16 -- --ignored"]
fn full_size_sd15_in_f16_stays_near_f32() {
    let gpu = wgpu_device();
    let device = cpu();
    let normal = Distribution::Normal(0.0, 1.0);
    let (unet16, unet) = rounded(UNetConfig::sd15().init(&device));
    let x = round(Tensor::<4>::random([1, 4, 64, 64], normal, &device));
    let context = round(Tensor::<3>::random([1, 77, 768], normal, &device));
    let ctx = |c: Tensor<3>| Conditioning {
        context: c,
        added: None,
    };
    let want = unet
        .forward(x.clone(), 981.0, ctx(context.clone()), &mut NoControl)
        .into_data();
    drop(unet);
    let got = unet16.fork(&gpu).forward(
        x.to_device(&gpu).cast(DType::F16),
        981.0,
        ctx(context.to_device(&gpu).cast(DType::F16)),
        &mut NoControl,
    );
    // 1.8e-3 measured (lavapipe, Mesa 22.3.6); 2.0e-2 while burn's direct convolution
    // summed f16 in f16.
    compare("SD1.5 U-Net 64x64 f16", got, &want, 5e-3);

    let (vae16, vae) = rounded(VaeConfig::sd15().init(&device));
    let z = round(Tensor::<4>::random([1, 4, 64, 64], normal, &device));
    let want = vae.decode(z.clone()).into_data();
    drop(vae);
    let got = vae16.fork(&gpu).decode(z.to_device(&gpu).cast(DType::F16));
    compare("SD1.5 VAE decode 512 px f16", got, &want, 2e-2);
}

/// SDXL's full-size U-Net (burn's random initialisation, 2.6 G parameters: rounded on the
/// CPU, the f32 reference run and dropped before the f16 copy moves, so no more than ~17 GB
/// are held at once) at 64x64 latents with the added conditioning.
#[test]
#[ignore = "full-size SDXL on lavapipe: ~5 min, ~17 GB; cargo test --test gpu_f16 -- --ignored"]
fn full_size_sdxl_in_f16_stays_near_f32() {
    let gpu = wgpu_device();
    let device = cpu();
    let normal = Distribution::Normal(0.0, 1.0);
    let (unet16, unet) = rounded(UNetConfig::sdxl().init(&device));
    let x = round(Tensor::<4>::random([1, 4, 64, 64], normal, &device));
    let context = round(Tensor::<3>::random([1, 77, 2048], normal, &device));
    let text_embeds = round(Tensor::<2>::random([1, 1280], normal, &device));
    let time_ids = Tensor::<2>::from_floats([[512.0, 512.0, 0.0, 0.0, 512.0, 512.0]], &device);
    let ctx = |c: &Tensor<3>, t: &Tensor<2>, ids: &Tensor<2>, dt: DType| Conditioning {
        context: c.clone().cast(dt),
        added: Some(AddedConditioning {
            text_embeds: t.clone().cast(dt),
            time_ids: ids.clone().cast(dt),
        }),
    };
    let want = unet
        .forward(
            x.clone(),
            981.0,
            ctx(&context, &text_embeds, &time_ids, DType::F32),
            &mut NoControl,
        )
        .into_data();
    drop(unet);
    let (context, text_embeds, time_ids) = (
        context.to_device(&gpu),
        text_embeds.to_device(&gpu),
        time_ids.to_device(&gpu),
    );
    let got = unet16.fork(&gpu).forward(
        x.to_device(&gpu).cast(DType::F16),
        981.0,
        ctx(&context, &text_embeds, &time_ids, DType::F16),
        &mut NoControl,
    );
    // 1.4e-3 measured (lavapipe, Mesa 22.3.6).
    compare("SDXL U-Net 64x64 f16", got, &want, 5e-3);
}

/// GroupNorm at the 1024 px VAE decoder's group size (its last block: 128 channels at
/// 1024x1024 in 32 groups, 4 channels x 2^20 = 4.2 M values a group), as an fp16-fix SDXL
/// VAE runs it (SDXL's own VAE decodes in f32: `force_upcast`). Two groups of that size
/// here, not the whole map: its f32 statistics copy is one 512 MiB buffer, over lavapipe's
/// storage binding limit (128 MiB), so the whole map cannot run there at all.
#[test]
fn group_norm_in_f16_holds_at_the_1024_px_group_size() {
    let gpu = wgpu_device();
    let device = cpu();
    let channels = 8;
    let mut norm = GroupNormConfig::new(2, channels)
        .with_epsilon(1e-6)
        .init(&device);
    norm.gamma = Some(Param::from_tensor(Tensor::<1>::random(
        [channels],
        Distribution::Normal(1.0, 0.3),
        &device,
    )));
    let (norm16, norm) = rounded(norm);
    let x = round(activations(channels, 1024));
    let want = group_norm(&norm, x.clone(), true).into_data();
    let got = group_norm(&norm16.fork(&gpu), x.to_device(&gpu).cast(DType::F16), true);
    compare(
        "GroupNorm+SiLU f16, 4.2 M values a group",
        got,
        &want,
        TOL_NORM,
    );
}

/// The relative RMS difference of `got` (any float type) from `want` (f32).
fn rms_rel(got: Tensor<4>, want: Tensor<4>) -> f32 {
    let got = got.cast(DType::F32).into_data();
    rms_of(&floats(&got), &floats(&want.into_data()))
}

/// The widest convolution and linear layer of SD's U-Nets in f16 accumulate in f32: their
/// f16 result is the f32 one (same f16-rounded inputs and weights) rounded once. A 3x3
/// convolution over 1280 channels sums 11520 products; summed in f16 (burn's direct
/// convolution) the RMS error was 1.5e-2 of the output, while the output's own rounding is
/// ~2e-4 (burn's matrix product at the same depth: 2.1e-4). The limit, 1e-3, is far from
/// both. Also the other shapes the networks convolve with: stride 2 with the U-Net's
/// symmetric padding and the VAE encoder's (0, 1, 0, 1), a kernel without padding, and a
/// map tall enough to be cut into bands (64 channels at 256x256, batch 2: 151 MB of columns),
/// and a 1x1 shortcut over 2560 channels.
#[test]
fn convolutions_and_linear_layers_in_f16_accumulate_in_f32() {
    let gpu = wgpu_device();
    let device = cpu();
    let normal = Distribution::Normal(0.0, 1.0);
    // (in, out, side, kernel, stride, padding [top, left, bottom, right])
    for (cin, cout, side, k, stride, [t, l, b, r]) in [
        (1280, 1280, 8, 3, 1, [1, 1, 1, 1]),
        (320, 320, 16, 3, 2, [1, 1, 1, 1]),
        (128, 128, 16, 3, 2, [0, 0, 1, 1]),
        (64, 32, 9, 3, 1, [0, 0, 0, 0]),
        (64, 8, 256, 3, 1, [1, 1, 1, 1]),
        // The up blocks' 1x1 shortcut (2560 products a sum).
        (2560, 1280, 8, 1, 1, [0, 0, 0, 0]),
    ] {
        let conv = Conv2dConfig::new([cin, cout], [k, k])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(t, l, b, r))
            .init(&device);
        let (conv16, conv) = rounded(conv);
        let x = round(Tensor::<4>::random([2, cin, side, side], normal, &device));
        let want = conv2d(&conv, x.clone());
        let got = conv2d(&conv16.fork(&gpu), x.to_device(&gpu).cast(DType::F16));
        assert_eq!(got.dims(), want.dims());
        let rel = rms_rel(got, want);
        let what = format!("conv {k}x{k} {cin} -> {cout} at {side}x{side}, stride {stride}");
        eprintln!("{what}, f16 on the GPU: RMS {rel:.2e} of RMS want");
        assert!(rel < 1e-3, "{what} in f16: RMS error {rel:e}");
    }

    // An upsampler's convolution over its map enlarged twice (on the GPU in the gather, on
    // the CPU as an enlarged map): SD1.5's VAE decoder's last upsampler, 256 channels.
    let conv = Conv2dConfig::new([256, 256], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(&device);
    let (conv16, conv) = rounded(conv);
    let x = round(Tensor::<4>::random([1, 256, 16, 16], normal, &device));
    let want = conv2d_upscaled(&conv, x.clone(), 2);
    let got = conv2d_upscaled(&conv16.fork(&gpu), x.to_device(&gpu).cast(DType::F16), 2);
    assert_eq!(got.dims(), [1, 256, 32, 32]);
    let rel = rms_rel(got, want);
    eprintln!("conv 3x3 256 over 16x16 enlarged twice, f16 on the GPU: RMS {rel:.2e} of RMS want");
    assert!(rel < 1e-3, "upsampler's conv in f16: RMS error {rel:e}");

    // The feed-forward's GEGLU projection (1280 -> 10240) over 64 tokens.
    let ff = LinearConfig::new(1280, 10240).init(&device);
    let (ff16, ff) = rounded(ff);
    let x = round(Tensor::<3>::random([1, 64, 1280], normal, &device));
    let want = linear(&ff, x.clone()).unsqueeze::<4>();
    let got = linear(&ff16.fork(&gpu), x.to_device(&gpu).cast(DType::F16)).unsqueeze::<4>();
    let rel = rms_rel(got, want);
    eprintln!("linear 1280 -> 10240 over 64 tokens, f16 on the GPU: RMS {rel:.2e} of RMS want");
    assert!(
        rel < 1e-3,
        "linear over 1280 features in f16: RMS error {rel:e}"
    );
}

/// The transformers' projections between the feature map and tokens
/// (`kernels::tokens`: on a GPU in half precision one product each, which reads the other
/// layout transposed) against the layers as they run on the CPU in f32, with the layout
/// change as a copy: SD1.5's 1x1 convolutions over 1280 channels and SDXL's linear layers
/// over 640, into tokens and back onto the map with the residual. Limits as above.
#[test]
fn the_projections_between_map_and_tokens_in_f16_hold() {
    use ditail::models::kernels::tokens::{Pointwise, from_tokens_add, to_tokens};
    let gpu = wgpu_device();
    let device = cpu();
    let normal = Distribution::Normal(0.0, 1.0);
    let (side, batch) = (8, 2);
    let conv = |c| Conv2dConfig::new([c, c], [1, 1]).init(&device);
    let convs = (rounded(conv(1280)), rounded(conv(1280)));
    let lin = |c| LinearConfig::new(c, c).init(&device);
    let linears = (rounded(lin(640)), rounded(lin(640)));
    let check = |what: &str, c: usize, into: Pointwise, back: Pointwise, into16, back16| {
        let map = round(Tensor::<4>::random([batch, c, side, side], normal, &device));
        let residual = round(Tensor::<4>::random([batch, c, side, side], normal, &device));
        let tokens = to_tokens(into, map.clone());
        assert_eq!(tokens.dims(), [batch, side * side, c]);
        let out = from_tokens_add(back, round(tokens.clone()), [side, side], residual.clone());

        let (map16, residual16) = (map.to_device(&gpu), residual.to_device(&gpu));
        let tokens16 = to_tokens(into16, map16.cast(DType::F16));
        assert_eq!(tokens16.dtype(), DType::F16);
        let tokens_rel = rms_rel(tokens16.unsqueeze::<4>(), tokens.clone().unsqueeze::<4>());
        // The way back from the same (rounded) tokens as the f32 run's, so that its error
        // is its own.
        let tokens_in = round(tokens).to_device(&gpu).cast(DType::F16);
        let back16 = from_tokens_add(back16, tokens_in, [side, side], residual16.cast(DType::F16));
        assert_eq!(back16.dims(), [batch, c, side, side]);
        let out_rel = rms_rel(back16, out);
        eprintln!("{what}: into tokens RMS {tokens_rel:.2e}, back RMS {out_rel:.2e} of RMS want");
        assert!(
            tokens_rel < 1e-3,
            "{what} into tokens in f16: RMS error {tokens_rel:e}"
        );
        assert!(
            out_rel < 1e-3,
            "{what} back onto the map in f16: RMS error {out_rel:e}"
        );
    };
    let ((conv_in16, conv_in), (conv_out16, conv_out)) = convs;
    let (conv_in16, conv_out16) = (conv_in16.fork(&gpu), conv_out16.fork(&gpu));
    check(
        "1x1 convolutions over 1280 channels",
        1280,
        Pointwise::Conv(&conv_in),
        Pointwise::Conv(&conv_out),
        Pointwise::Conv(&conv_in16),
        Pointwise::Conv(&conv_out16),
    );
    let ((lin_in16, lin_in), (lin_out16, lin_out)) = linears;
    let (lin_in16, lin_out16) = (lin_in16.fork(&gpu), lin_out16.fork(&gpu));
    check(
        "linear layers over 640 channels",
        640,
        Pointwise::Linear(&lin_in),
        Pointwise::Linear(&lin_out),
        Pointwise::Linear(&lin_in16),
        Pointwise::Linear(&lin_out16),
    );
}

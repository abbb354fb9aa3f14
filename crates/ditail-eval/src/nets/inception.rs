//! InceptionV3 as pytorch-fid defines it, for FID: the 2048 pool features of the network
//! ported from TensorFlow's FID graph (`pt_inception-2015-12-05`).
//!
//! Ports pytorch-fid's [`inception.py`](https://github.com/mseitzer/pytorch-fid/blob/b9d7ca3b6dd1ab19f81d1bc5a4e8ab05c7ab6ad2/src/pytorch_fid/inception.py)
//! (`fid_inception_v3` and `InceptionV3([3])`). Its blocks differ from torchvision's: the
//! average pools of `Mixed_5*`, `Mixed_6b..e` and `Mixed_7b` leave the padding out of the
//! count (`count_include_pad=False`) and `Mixed_7c` pools by maximum, as TensorFlow's graph
//! does. The input is bilinearly resized to 299x299 and mapped from [0, 1] to [-1, 1]
//! inside the forward, as pytorch-fid's is. Field names are the weight file's keys
//! (torchvision's `Inception3` names).
#![allow(non_snake_case)]

use burn::module::Param;
use burn::nn::Initializer;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::{avg_pool2d, interpolate, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, InterpolateMode, InterpolateOptions, MaxPoolOptions};

use ditail_models::error::{ModelError, Result};

/// Width of the pool features.
pub const FEATURES: usize = 2048;
/// Side the input is resized to.
pub const INPUT_SIDE: usize = 299;
/// BatchNorm epsilon of TensorFlow's graph (torchvision's `BasicConv2d`).
const BN_EPS: f64 = 1e-3;

/// Inference BatchNorm with PyTorch's parameter names (`weight`, `bias`, `running_mean`,
/// `running_var`).
#[derive(Module, Debug)]
pub struct FrozenBatchNorm {
    /// Scale.
    pub weight: Param<Tensor<1>>,
    /// Shift.
    pub bias: Param<Tensor<1>>,
    /// Running mean.
    pub running_mean: Param<Tensor<1>>,
    /// Running variance.
    pub running_var: Param<Tensor<1>>,
}

/// torchvision's `BasicConv2d`: convolution without bias, BatchNorm, ReLU.
#[derive(Module, Debug)]
pub struct BasicConv2d {
    /// The convolution.
    pub conv: Conv2d,
    /// Its BatchNorm.
    pub bn: FrozenBatchNorm,
}

impl BasicConv2d {
    fn new(
        [i, o]: [usize; 2],
        kernel: [usize; 2],
        stride: usize,
        padding: [usize; 2],
        device: &Device,
    ) -> Self {
        let zeros = || Initializer::Zeros.init([o], device);
        Self {
            conv: Conv2dConfig::new([i, o], kernel)
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(
                    padding[0], padding[1], padding[0], padding[1],
                ))
                .with_bias(false)
                .init(device),
            bn: FrozenBatchNorm {
                weight: zeros(),
                bias: zeros(),
                running_mean: zeros(),
                running_var: zeros(),
            },
        }
    }

    /// # Shapes
    /// - `x`: `[batch, in, h, w]`; output: `[batch, out, h', w']`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let bn = &self.bn;
        // BatchNorm folded into one scale and shift per channel.
        let scale = bn.weight.val() / (bn.running_var.val() + BN_EPS).sqrt();
        let shift = bn.bias.val() - bn.running_mean.val() * scale.clone();
        let c = scale.dims()[0];
        let y = ditail_models::kernels::conv::conv2d(&self.conv, x);
        relu(y * scale.reshape([1, c, 1, 1]) + shift.reshape([1, c, 1, 1]))
    }
}

fn conv(io: [usize; 2], k: usize, d: &Device) -> BasicConv2d {
    BasicConv2d::new(io, [k, k], 1, [k / 2, k / 2], d)
}

fn conv_s2(io: [usize; 2], d: &Device) -> BasicConv2d {
    BasicConv2d::new(io, [3, 3], 2, [0, 0], d)
}

/// A 1x`k` (`wide`) or `k`x1 convolution with "same" padding.
fn conv_line(io: [usize; 2], k: usize, wide: bool, d: &Device) -> BasicConv2d {
    if wide {
        BasicConv2d::new(io, [1, k], 1, [0, k / 2], d)
    } else {
        BasicConv2d::new(io, [k, 1], 1, [k / 2, 0], d)
    }
}

fn avg_pool_3x3(x: Tensor<4>) -> Tensor<4> {
    let options = AvgPoolOptions::new([3, 3])
        .with_stride([1, 1])
        .with_padding([1, 1])
        .with_count_include_pad(false);
    avg_pool2d(x, options)
}

fn max_pool_3x3(x: Tensor<4>, stride: usize, padding: usize) -> Tensor<4> {
    let options = MaxPoolOptions::new([3, 3])
        .with_stride([stride, stride])
        .with_padding([padding, padding]);
    max_pool2d(x, options)
}

/// `FIDInceptionA` (`Mixed_5b`, `5c`, `5d`).
#[derive(Module, Debug)]
pub struct InceptionA {
    /// `branch1x1`.
    pub branch1x1: BasicConv2d,
    /// `branch5x5_1`.
    pub branch5x5_1: BasicConv2d,
    /// `branch5x5_2`.
    pub branch5x5_2: BasicConv2d,
    /// `branch3x3dbl_1`.
    pub branch3x3dbl_1: BasicConv2d,
    /// `branch3x3dbl_2`.
    pub branch3x3dbl_2: BasicConv2d,
    /// `branch3x3dbl_3`.
    pub branch3x3dbl_3: BasicConv2d,
    /// `branch_pool`.
    pub branch_pool: BasicConv2d,
}

impl InceptionA {
    fn new(i: usize, pool: usize, d: &Device) -> Self {
        Self {
            branch1x1: conv([i, 64], 1, d),
            branch5x5_1: conv([i, 48], 1, d),
            branch5x5_2: conv([48, 64], 5, d),
            branch3x3dbl_1: conv([i, 64], 1, d),
            branch3x3dbl_2: conv([64, 96], 3, d),
            branch3x3dbl_3: conv([96, 96], 3, d),
            branch_pool: conv([i, pool], 1, d),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b1 = self.branch1x1.forward(x.clone());
        let b5 = self
            .branch5x5_2
            .forward(self.branch5x5_1.forward(x.clone()));
        let b3 = self.branch3x3dbl_3.forward(
            self.branch3x3dbl_2
                .forward(self.branch3x3dbl_1.forward(x.clone())),
        );
        let bp = self.branch_pool.forward(avg_pool_3x3(x));
        Tensor::cat(vec![b1, b5, b3, bp], 1)
    }
}

/// torchvision's `InceptionB` (`Mixed_6a`), unchanged in pytorch-fid.
#[derive(Module, Debug)]
pub struct InceptionB {
    /// `branch3x3`.
    pub branch3x3: BasicConv2d,
    /// `branch3x3dbl_1`.
    pub branch3x3dbl_1: BasicConv2d,
    /// `branch3x3dbl_2`.
    pub branch3x3dbl_2: BasicConv2d,
    /// `branch3x3dbl_3`.
    pub branch3x3dbl_3: BasicConv2d,
}

impl InceptionB {
    fn new(i: usize, d: &Device) -> Self {
        Self {
            branch3x3: conv_s2([i, 384], d),
            branch3x3dbl_1: conv([i, 64], 1, d),
            branch3x3dbl_2: conv([64, 96], 3, d),
            branch3x3dbl_3: conv_s2([96, 96], d),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b3 = self.branch3x3.forward(x.clone());
        let bd = self.branch3x3dbl_3.forward(
            self.branch3x3dbl_2
                .forward(self.branch3x3dbl_1.forward(x.clone())),
        );
        Tensor::cat(vec![b3, bd, max_pool_3x3(x, 2, 0)], 1)
    }
}

/// `FIDInceptionC` (`Mixed_6b` to `6e`).
#[derive(Module, Debug)]
pub struct InceptionC {
    /// `branch1x1`.
    pub branch1x1: BasicConv2d,
    /// `branch7x7_1`.
    pub branch7x7_1: BasicConv2d,
    /// `branch7x7_2`.
    pub branch7x7_2: BasicConv2d,
    /// `branch7x7_3`.
    pub branch7x7_3: BasicConv2d,
    /// `branch7x7dbl_1`.
    pub branch7x7dbl_1: BasicConv2d,
    /// `branch7x7dbl_2`.
    pub branch7x7dbl_2: BasicConv2d,
    /// `branch7x7dbl_3`.
    pub branch7x7dbl_3: BasicConv2d,
    /// `branch7x7dbl_4`.
    pub branch7x7dbl_4: BasicConv2d,
    /// `branch7x7dbl_5`.
    pub branch7x7dbl_5: BasicConv2d,
    /// `branch_pool`.
    pub branch_pool: BasicConv2d,
}

impl InceptionC {
    fn new(i: usize, c7: usize, d: &Device) -> Self {
        Self {
            branch1x1: conv([i, 192], 1, d),
            branch7x7_1: conv([i, c7], 1, d),
            branch7x7_2: conv_line([c7, c7], 7, true, d),
            branch7x7_3: conv_line([c7, 192], 7, false, d),
            branch7x7dbl_1: conv([i, c7], 1, d),
            branch7x7dbl_2: conv_line([c7, c7], 7, false, d),
            branch7x7dbl_3: conv_line([c7, c7], 7, true, d),
            branch7x7dbl_4: conv_line([c7, c7], 7, false, d),
            branch7x7dbl_5: conv_line([c7, 192], 7, true, d),
            branch_pool: conv([i, 192], 1, d),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b1 = self.branch1x1.forward(x.clone());
        let mut b7 = self.branch7x7_1.forward(x.clone());
        for c in [&self.branch7x7_2, &self.branch7x7_3] {
            b7 = c.forward(b7);
        }
        let mut bd = self.branch7x7dbl_1.forward(x.clone());
        for c in [
            &self.branch7x7dbl_2,
            &self.branch7x7dbl_3,
            &self.branch7x7dbl_4,
            &self.branch7x7dbl_5,
        ] {
            bd = c.forward(bd);
        }
        let bp = self.branch_pool.forward(avg_pool_3x3(x));
        Tensor::cat(vec![b1, b7, bd, bp], 1)
    }
}

/// torchvision's `InceptionD` (`Mixed_7a`), unchanged in pytorch-fid.
#[derive(Module, Debug)]
pub struct InceptionD {
    /// `branch3x3_1`.
    pub branch3x3_1: BasicConv2d,
    /// `branch3x3_2`.
    pub branch3x3_2: BasicConv2d,
    /// `branch7x7x3_1`.
    pub branch7x7x3_1: BasicConv2d,
    /// `branch7x7x3_2`.
    pub branch7x7x3_2: BasicConv2d,
    /// `branch7x7x3_3`.
    pub branch7x7x3_3: BasicConv2d,
    /// `branch7x7x3_4`.
    pub branch7x7x3_4: BasicConv2d,
}

impl InceptionD {
    fn new(i: usize, d: &Device) -> Self {
        Self {
            branch3x3_1: conv([i, 192], 1, d),
            branch3x3_2: conv_s2([192, 320], d),
            branch7x7x3_1: conv([i, 192], 1, d),
            branch7x7x3_2: conv_line([192, 192], 7, true, d),
            branch7x7x3_3: conv_line([192, 192], 7, false, d),
            branch7x7x3_4: conv_s2([192, 192], d),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b3 = self
            .branch3x3_2
            .forward(self.branch3x3_1.forward(x.clone()));
        let mut b7 = self.branch7x7x3_1.forward(x.clone());
        for c in [
            &self.branch7x7x3_2,
            &self.branch7x7x3_3,
            &self.branch7x7x3_4,
        ] {
            b7 = c.forward(b7);
        }
        Tensor::cat(vec![b3, b7, max_pool_3x3(x, 2, 0)], 1)
    }
}

/// `FIDInceptionE_1` (`Mixed_7b`, average pool) and `FIDInceptionE_2` (`Mixed_7c`, max
/// pool): the same weights, a different pool.
#[derive(Module, Debug)]
pub struct InceptionE {
    /// `branch1x1`.
    pub branch1x1: BasicConv2d,
    /// `branch3x3_1`.
    pub branch3x3_1: BasicConv2d,
    /// `branch3x3_2a`.
    pub branch3x3_2a: BasicConv2d,
    /// `branch3x3_2b`.
    pub branch3x3_2b: BasicConv2d,
    /// `branch3x3dbl_1`.
    pub branch3x3dbl_1: BasicConv2d,
    /// `branch3x3dbl_2`.
    pub branch3x3dbl_2: BasicConv2d,
    /// `branch3x3dbl_3a`.
    pub branch3x3dbl_3a: BasicConv2d,
    /// `branch3x3dbl_3b`.
    pub branch3x3dbl_3b: BasicConv2d,
    /// `branch_pool`.
    pub branch_pool: BasicConv2d,
    /// `Mixed_7c`'s max pool instead of the average.
    pub max_pool: bool,
}

impl InceptionE {
    fn new(i: usize, max_pool: bool, d: &Device) -> Self {
        Self {
            branch1x1: conv([i, 320], 1, d),
            branch3x3_1: conv([i, 384], 1, d),
            branch3x3_2a: conv_line([384, 384], 3, true, d),
            branch3x3_2b: conv_line([384, 384], 3, false, d),
            branch3x3dbl_1: conv([i, 448], 1, d),
            branch3x3dbl_2: conv([448, 384], 3, d),
            branch3x3dbl_3a: conv_line([384, 384], 3, true, d),
            branch3x3dbl_3b: conv_line([384, 384], 3, false, d),
            branch_pool: conv([i, 192], 1, d),
            max_pool,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b1 = self.branch1x1.forward(x.clone());
        let b3 = self.branch3x3_1.forward(x.clone());
        let b3 = Tensor::cat(
            vec![
                self.branch3x3_2a.forward(b3.clone()),
                self.branch3x3_2b.forward(b3),
            ],
            1,
        );
        let bd = self
            .branch3x3dbl_2
            .forward(self.branch3x3dbl_1.forward(x.clone()));
        let bd = Tensor::cat(
            vec![
                self.branch3x3dbl_3a.forward(bd.clone()),
                self.branch3x3dbl_3b.forward(bd),
            ],
            1,
        );
        let pooled = if self.max_pool {
            max_pool_3x3(x, 1, 1)
        } else {
            avg_pool_3x3(x)
        };
        let bp = self.branch_pool.forward(pooled);
        Tensor::cat(vec![b1, b3, bd, bp], 1)
    }
}

/// pytorch-fid's InceptionV3 up to the pool features (the classifier `fc` of the weight
/// file is not used).
#[derive(Module, Debug)]
pub struct InceptionV3 {
    /// `Conv2d_1a_3x3`.
    pub Conv2d_1a_3x3: BasicConv2d,
    /// `Conv2d_2a_3x3`.
    pub Conv2d_2a_3x3: BasicConv2d,
    /// `Conv2d_2b_3x3`.
    pub Conv2d_2b_3x3: BasicConv2d,
    /// `Conv2d_3b_1x1`.
    pub Conv2d_3b_1x1: BasicConv2d,
    /// `Conv2d_4a_3x3`.
    pub Conv2d_4a_3x3: BasicConv2d,
    /// `Mixed_5b`.
    pub Mixed_5b: InceptionA,
    /// `Mixed_5c`.
    pub Mixed_5c: InceptionA,
    /// `Mixed_5d`.
    pub Mixed_5d: InceptionA,
    /// `Mixed_6a`.
    pub Mixed_6a: InceptionB,
    /// `Mixed_6b`.
    pub Mixed_6b: InceptionC,
    /// `Mixed_6c`.
    pub Mixed_6c: InceptionC,
    /// `Mixed_6d`.
    pub Mixed_6d: InceptionC,
    /// `Mixed_6e`.
    pub Mixed_6e: InceptionC,
    /// `Mixed_7a`.
    pub Mixed_7a: InceptionD,
    /// `Mixed_7b`.
    pub Mixed_7b: InceptionE,
    /// `Mixed_7c`.
    pub Mixed_7c: InceptionE,
}

impl InceptionV3 {
    /// The network with uninitialised weights, to be loaded.
    pub fn init(device: &Device) -> Self {
        let d = device;
        Self {
            Conv2d_1a_3x3: conv_s2([3, 32], d),
            Conv2d_2a_3x3: BasicConv2d::new([32, 32], [3, 3], 1, [0, 0], d),
            Conv2d_2b_3x3: conv([32, 64], 3, d),
            Conv2d_3b_1x1: conv([64, 80], 1, d),
            Conv2d_4a_3x3: BasicConv2d::new([80, 192], [3, 3], 1, [0, 0], d),
            Mixed_5b: InceptionA::new(192, 32, d),
            Mixed_5c: InceptionA::new(256, 64, d),
            Mixed_5d: InceptionA::new(288, 64, d),
            Mixed_6a: InceptionB::new(288, d),
            Mixed_6b: InceptionC::new(768, 128, d),
            Mixed_6c: InceptionC::new(768, 160, d),
            Mixed_6d: InceptionC::new(768, 160, d),
            Mixed_6e: InceptionC::new(768, 192, d),
            Mixed_7a: InceptionD::new(768, d),
            Mixed_7b: InceptionE::new(1280, false, d),
            Mixed_7c: InceptionE::new(2048, true, d),
        }
    }

    /// The 2048 pool features of images in [0, 1], resized (bilinear, corners not
    /// aligned, as `F.interpolate`) to 299x299 first unless they are already.
    ///
    /// # Shapes
    /// - `images`: `[batch, 3, h, w]`, RGB in [0, 1]; output: `[batch, 2048]`
    pub fn forward(&self, images: Tensor<4>) -> Result<Tensor<2>> {
        let [b, c, h, w] = images.dims();
        if c != 3 || h == 0 || w == 0 {
            return Err(ModelError::InvalidInput {
                name: "images".into(),
                reason: format!("shape [{b}, {c}, {h}, {w}], expected 3 channels"),
            });
        }
        let x = if [h, w] == [INPUT_SIDE, INPUT_SIDE] {
            images
        } else {
            interpolate(
                images,
                InterpolateOptions::new(InterpolateMode::Bilinear)
                    .with_align_corners(false)
                    .with_output_size([INPUT_SIDE, INPUT_SIDE]),
            )
        };
        let x = x * 2.0 - 1.0;
        let x = self.Conv2d_1a_3x3.forward(x);
        let x = self.Conv2d_2a_3x3.forward(x);
        let x = self.Conv2d_2b_3x3.forward(x);
        let x = max_pool_3x3(x, 2, 0);
        let x = self.Conv2d_3b_1x1.forward(x);
        let x = self.Conv2d_4a_3x3.forward(x);
        let x = max_pool_3x3(x, 2, 0);
        let mut x = x;
        for m in [&self.Mixed_5b, &self.Mixed_5c, &self.Mixed_5d] {
            x = m.forward(x);
        }
        x = self.Mixed_6a.forward(x);
        for m in [
            &self.Mixed_6b,
            &self.Mixed_6c,
            &self.Mixed_6d,
            &self.Mixed_6e,
        ] {
            x = m.forward(x);
        }
        x = self.Mixed_7a.forward(x);
        x = self.Mixed_7b.forward(x);
        x = self.Mixed_7c.forward(x);
        Ok(x.mean_dim(2).mean_dim(3).reshape([b, FEATURES]))
    }
}

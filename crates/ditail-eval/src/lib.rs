//! The Ditail paper's metrics, as its reference evaluation
//! ([`src/ditail_metrics.py`](https://github.com/MAPS-research/Ditail/blob/4b8b4e0b4fe56e1cd1b5ae7e8ebb2ea3dbc5b1ba/src/ditail_metrics.py))
//! computes them, with its networks ([`nets`]) on the loader of [`ditail_models`]:
//!
//! - CLIP score: how well a result follows its prompt (CLIP ViT-L/14, the diagonal of
//!   `logits_per_text` / 100; higher is better);
//! - structure distance: how much of the content image's layout a result keeps (DINO
//!   ViT-B/8, the mean squared difference of the last layer's key self-similarities, as in
//!   Splicing ViT and Plug-and-Play; lower is better);
//! - FID: how far the results' distribution is from a reference folder's (pytorch-fid's
//!   InceptionV3; lower is better).
//!
//! [`pairing`] says which images go together, [`preprocess`] prepares each metric's input,
//! [`fid`] and [`metrics`] compute the numbers, [`evaluate`] runs it all in batches.

pub mod error;
pub mod fid;
pub mod metrics;
pub mod nets;
pub mod pairing;
pub mod preprocess;

use std::path::{Path, PathBuf};

use burn::prelude::*;
use ditail_pipeline::preprocess::load_rgb;
use nets::inception::{INPUT_SIDE, InceptionV3};
use nets::load::Clip;
use nets::vit::VitModel;
use serde::Serialize;

pub use error::{EvalError, Result};
pub use pairing::Item;

/// The networks to score with; a metric whose network is absent is not computed.
#[derive(Debug, Default)]
pub struct Networks {
    /// For the CLIP score.
    pub clip: Option<Clip>,
    /// For the structure distance.
    pub dino: Option<VitModel>,
    /// For FID.
    pub inception: Option<InceptionV3>,
}

/// How to evaluate.
#[derive(Clone, Debug)]
pub struct Options {
    /// Images per forward.
    pub batch: usize,
    /// The DINO layer whose keys are compared (0-based); `None` is the last (the
    /// reference's layer 11 of ViT-B/8).
    pub dino_layer: Option<usize>,
    /// FID on the images as they are, without the reference's 224x224 squash (pytorch-fid's
    /// own `fid_score`).
    pub fid_native: bool,
    /// How DINO's input is resized (the reference's torchvision by default).
    pub dino_resize: preprocess::DinoResize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            batch: 8,
            dino_layer: None,
            fid_native: false,
            dino_resize: preprocess::DinoResize::Reference,
        }
    }
}

/// Which metric a progress report is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// CLIP score of the results.
    Clip,
    /// Structure distance of the pairs.
    Structure,
    /// Inception features of the results.
    FidResults,
    /// Inception features of the reference folder.
    FidReference,
}

impl Stage {
    /// A short label for progress bars.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Clip => "CLIP score",
            Stage::Structure => "structure (DINO)",
            Stage::FidResults => "FID: results",
            Stage::FidReference => "FID: reference",
        }
    }
}

/// The scores of one result.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ImageScores {
    /// The result's file name.
    pub name: String,
    /// Its CLIP score with its prompt.
    pub clip_score: Option<f64>,
    /// Its structure distance to its content image.
    pub structure_distance: Option<f64>,
}

/// FID and what it rests on.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FidReport {
    /// The distance.
    pub fid: f64,
    /// Results it was computed on.
    pub results: usize,
    /// Reference images.
    pub reference: usize,
    /// Why the number should not be trusted, when it should not.
    pub warning: Option<String>,
}

/// What [`evaluate`] found.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Report {
    /// Per result, in order.
    pub images: Vec<ImageScores>,
    /// Mean CLIP score.
    pub clip_score: Option<f64>,
    /// Mean structure distance.
    pub structure_distance: Option<f64>,
    /// How DINO's inputs were resized, when a structure distance was computed.
    pub dino_resize: Option<preprocess::DinoResize>,
    /// FID against the reference folder.
    pub fid: Option<FidReport>,
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// Stacks `[3, side, side]` planes into `[n, 3, side, side]`.
fn batch_tensor(planes: Vec<Vec<f32>>, side: usize, device: &Device) -> Tensor<4> {
    let n = planes.len();
    let flat: Vec<f32> = planes.into_iter().flatten().collect();
    Tensor::from_data(TensorData::new(flat, [n, 3, side, side]), device)
}

fn load(path: &Path) -> Result<image::RgbImage> {
    Ok(load_rgb(path)?)
}

/// Scores `items` (CLIP score where they have a prompt, structure distance where they have
/// a content image) and, with `reference` images, the FID of all results against them.
/// `progress(stage, done, total)` is called after every batch; when it returns `false` the
/// evaluation stops and returns `Ok(None)`.
pub fn evaluate(
    items: &[Item],
    reference: &[PathBuf],
    nets: &Networks,
    opts: &Options,
    device: &Device,
    progress: &mut dyn FnMut(Stage, usize, usize) -> bool,
) -> Result<Option<Report>> {
    let batch = opts.batch.max(1);
    let mut images: Vec<ImageScores> = items
        .iter()
        .map(|i| ImageScores {
            name: i.name.clone(),
            ..Default::default()
        })
        .collect();

    if let Some(clip) = &nets.clip {
        let with: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].prompt.is_some())
            .collect();
        let side = clip_side(clip);
        for (done, chunk) in with.chunks(batch).enumerate() {
            let mut pixels = Vec::with_capacity(chunk.len());
            let mut ids = Vec::with_capacity(chunk.len());
            for &i in chunk {
                pixels.push(preprocess::clip_pixels(
                    &load(&items[i].result)?,
                    side as u32,
                ));
                let prompt = items[i].prompt.as_deref().unwrap_or_default();
                ids.push(clip.tokenizer.encode(prompt)?);
            }
            let image = clip
                .model
                .image_features(batch_tensor(pixels, side, device))?;
            let text = clip.model.text_features(&ids, device)?;
            let scores = metrics::clip_scores(clip.model.logits_per_text(text, image));
            for (&i, s) in chunk.iter().zip(scores) {
                images[i].clip_score = Some(s);
            }
            if !progress(
                Stage::Clip,
                ((done + 1) * batch).min(with.len()),
                with.len(),
            ) {
                return Ok(None);
            }
        }
    }

    if let Some(dino) = &nets.dino {
        let with: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].content.is_some())
            .collect();
        let layer = opts.dino_layer.unwrap_or(dino.num_layers() - 1);
        let side = vit_side(dino);
        for (done, chunk) in with.chunks(batch).enumerate() {
            let (mut content, mut result) = (Vec::new(), Vec::new());
            for &i in chunk {
                let c = items[i].content.as_deref().expect("filtered on content");
                let pixels = |img| preprocess::dino_pixels(&img, side as u32, opts.dino_resize);
                content.push(pixels(load(c)?));
                result.push(pixels(load(&items[i].result)?));
            }
            let kc = dino.keys(batch_tensor(content, side, device), layer)?;
            let kr = dino.keys(batch_tensor(result, side, device), layer)?;
            for (&i, d) in chunk.iter().zip(metrics::structure_distances(kc, kr)) {
                images[i].structure_distance = Some(d);
            }
            if !progress(
                Stage::Structure,
                ((done + 1) * batch).min(with.len()),
                with.len(),
            ) {
                return Ok(None);
            }
        }
    }

    let mut fid = None;
    if let (Some(inception), false) = (&nets.inception, reference.is_empty()) {
        let results: Vec<&Path> = items.iter().map(|i| i.result.as_path()).collect();
        let refs: Vec<&Path> = reference.iter().map(PathBuf::as_path).collect();
        let mut features = |paths: &[&Path], stage| -> Result<Option<fid::Features>> {
            let mut rows = Vec::with_capacity(paths.len());
            for (done, chunk) in paths.chunks(batch).enumerate() {
                let mut planes = Vec::with_capacity(chunk.len());
                for p in chunk {
                    planes.push(preprocess::inception_pixels(
                        &load(p)?,
                        INPUT_SIDE as u32,
                        opts.fid_native,
                    ));
                }
                let f = inception.forward(batch_tensor(planes, INPUT_SIDE, device))?;
                let values = f
                    .into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .expect("f32 data");
                rows.extend(
                    values
                        .chunks(nets::inception::FEATURES)
                        .map(<[f32]>::to_vec),
                );
                if !progress(stage, ((done + 1) * batch).min(paths.len()), paths.len()) {
                    return Ok(None);
                }
            }
            fid::Features::new(&rows).map(Some)
        };
        let Some(a) = features(&results, Stage::FidResults)? else {
            return Ok(None);
        };
        let Some(b) = features(&refs, Stage::FidReference)? else {
            return Ok(None);
        };
        let value = fid::frechet_distance(&a, &b)?;
        let d = a.dim();
        let warning = (a.len().min(b.len()) < d).then(|| {
            format!(
                "FID from {} results and {} reference images: with fewer images than the {d} \
                 features the covariances are singular (rank at most n - 1) and the number \
                 depends strongly on n; compare FIDs only at equal counts, and use at least \
                 {d} images (the usual practice is 10,000 or more) for a number comparable \
                 with published ones",
                a.len(),
                b.len()
            )
        });
        fid = Some(FidReport {
            fid: value,
            results: a.len(),
            reference: b.len(),
            warning,
        });
    }

    Ok(Some(Report {
        clip_score: mean(images.iter().filter_map(|s| s.clip_score)),
        structure_distance: mean(images.iter().filter_map(|s| s.structure_distance)),
        dino_resize: images
            .iter()
            .any(|s| s.structure_distance.is_some())
            .then_some(opts.dino_resize),
        images,
        fid,
    }))
}

/// The side CLIP's vision tower takes.
fn clip_side(clip: &Clip) -> usize {
    let e = &clip.model.vision_model.embeddings;
    let positions = e.position_embedding.weight.val().dims()[0];
    let patch = e.patch_embedding.weight.val().dims()[2];
    ((positions - 1) as f64).sqrt().round() as usize * patch
}

/// The side the ViT takes.
fn vit_side(vit: &VitModel) -> usize {
    let e = &vit.embeddings;
    let tokens = e.position_embeddings.val().dims()[1];
    let patch = e.patch_embeddings.projection.weight.val().dims()[2];
    ((tokens - 1) as f64).sqrt().round() as usize * patch
}

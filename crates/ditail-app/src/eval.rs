//! The paper's metrics over result images, as every face runs them (`ditail eval`, a
//! cocktail's and a batch's `--eval`, Python's `ditail.evaluate`): results paired with their
//! prompts and content images, the metric networks located and checked before any long work
//! ([`Evaluation::plan`], [`check`]), then loaded and run ([`score`]) with progress through
//! an [`EvalSink`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ditail_eval::nets::load::{ClipPlan, VitPlan, load_inception, plan_clip, plan_vit};
use ditail_eval::pairing::{self, Item};
use ditail_eval::preprocess::DinoResize;
use ditail_eval::{Networks, Options, Report, Stage, evaluate};
use ditail_models::device::Compute;
use ditail_models::load::hub::HubOptions;
use ditail_pipeline::PipelineError;
use ditail_pipeline::digest::image_hash;
use ditail_pipeline::preprocess::load_rgb;

use crate::record::{cache_dir, read_record};
use crate::{Context, Result, refuse};

/// pytorch-fid's weights, where they are downloaded from and the name ditail looks for.
pub const INCEPTION_URL: &str = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth";
/// The converted weights' file name in ditail's cache folder.
pub const INCEPTION_FILE: &str = "pt_inception-2015-12-05-6726825d.safetensors";
/// The CLIP model of the CLIP score (the paper's).
pub const DEFAULT_CLIP: &str = "openai/clip-vit-large-patch14";
/// The DINO model of the structure distance (the paper's).
pub const DEFAULT_DINO: &str = "facebook/dino-vitb8";

/// The metric networks and how they run.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[cfg_attr(feature = "clap", command(next_help_heading = "Evaluation networks"))]
pub struct EvalOptions {
    /// The CLIP model (CLIP score): a transformers folder, .safetensors file or repo id.
    #[cfg_attr(feature = "clap", arg(long, value_name = "MODEL", default_value = DEFAULT_CLIP))]
    pub clip: String,
    /// The DINO model (structure distance): a transformers folder, .safetensors file or
    /// repo id.
    #[cfg_attr(feature = "clap", arg(long, value_name = "MODEL", default_value = DEFAULT_DINO))]
    pub dino: String,
    /// Images per forward of the metric networks.
    #[cfg_attr(feature = "clap", arg(long, value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=1024)))]
    pub eval_batch: u32,
    /// Resize DINO's inputs with antialiasing, as torchvision >= 0.17 does, instead of as the
    /// reference's pinned torchvision 0.16.1 (no antialiasing; the paper's numbers). The
    /// JSON says which was used.
    #[cfg_attr(feature = "clap", arg(long))]
    pub dino_antialias: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            clip: DEFAULT_CLIP.into(),
            dino: DEFAULT_DINO.into(),
            eval_batch: 8,
            dino_antialias: false,
        }
    }
}

impl EvalOptions {
    /// The evaluation crate's options these set (FID's are the caller's).
    pub fn options(&self) -> Options {
        Options {
            batch: self.eval_batch.max(1) as usize,
            dino_resize: if self.dino_antialias {
                DinoResize::Antialiased
            } else {
                DinoResize::Reference
            },
            ..Options::default()
        }
    }
}

/// Where the results' prompts come from.
#[derive(Clone, Debug)]
pub enum Prompts {
    /// None: no CLIP score (unless taken from the metadata).
    None,
    /// A file of `name<TAB>prompt` lines or a JSON object `{name: prompt}`.
    File(PathBuf),
    /// Prompts by result name (the file stem).
    Map(BTreeMap<String, String>),
    /// The metadata ditail writes into its PNGs (and, with a content folder, each
    /// transfer's content image, found by the hash of its pixels).
    Metadata,
}

/// What to score.
#[derive(Clone, Debug)]
pub struct EvalInputs {
    /// The folder of results.
    pub results: PathBuf,
    /// The content images, paired by file name (or, with [`Prompts::Metadata`], by hash).
    pub content: Option<PathBuf>,
    /// The results' prompts.
    pub prompts: Prompts,
    /// A folder of reference images (FID).
    pub reference: Option<PathBuf>,
    /// pytorch-fid's InceptionV3 weights as .safetensors (default: in ditail's cache).
    pub inception: Option<PathBuf>,
    /// FID on the images as they are, not squashed to 224x224 as the reference does.
    pub fid_native: bool,
}

/// An evaluation checked and ready to run.
pub struct Evaluation {
    /// The results, paired.
    pub items: Vec<Item>,
    /// The reference images (FID), if any.
    pub reference: Vec<PathBuf>,
    /// Results left out because they carry no ditail metadata (a contact sheet).
    pub skipped: usize,
    checked: Checked,
    options: Options,
}

impl Evaluation {
    /// Pairs and checks everything (folders, prompts, content images, the networks, which
    /// are downloaded if need be) without loading a network.
    pub fn plan(inputs: &EvalInputs, nets: &EvalOptions) -> Result<Self> {
        let results = pairing::list_images(&inputs.results)?;
        let content = inputs
            .content
            .as_deref()
            .map(pairing::list_images)
            .transpose()?;
        let reference = inputs
            .reference
            .as_deref()
            .map(pairing::list_images)
            .transpose()?;
        let mut items = pairing::items(&results);
        let mut skipped = 0;
        if let Prompts::Metadata = inputs.prompts {
            skipped = pair_from_metadata(&mut items, content.as_deref())?;
        } else {
            if let Some(content) = &content {
                pairing::pair_content(&mut items, content)?;
            }
            match &inputs.prompts {
                Prompts::File(path) => {
                    pairing::pair_prompts(&mut items, &pairing::read_prompts(path)?)?
                }
                Prompts::Map(map) => pairing::pair_prompts(&mut items, map)?,
                Prompts::None | Prompts::Metadata => {}
            }
        }
        let wants_clip = items.iter().any(|i| i.prompt.is_some());
        let wants_dino = items.iter().any(|i| i.content.is_some());
        if !wants_clip && !wants_dino && reference.is_none() {
            refuse!(
                "nothing to compute: give prompts or take them from the metadata (CLIP score), \
                 content images (structure distance) or reference images (FID)"
            );
        }
        let inception = reference
            .as_ref()
            .map(|_| inception_path(inputs.inception.as_deref()))
            .transpose()?;
        let checked = check(nets, wants_clip, wants_dino, inception)?;
        Ok(Self {
            items,
            reference: reference.unwrap_or_default(),
            skipped,
            checked,
            options: Options {
                fid_native: inputs.fid_native,
                ..nets.options()
            },
        })
    }

    /// Loads the networks and scores.
    pub fn run(self, compute: &Compute, sink: &mut dyn EvalSink) -> Result<Report> {
        score(
            &self.items,
            &self.reference,
            self.checked,
            &self.options,
            compute,
            sink,
        )
    }
}

/// How a running evaluation reports.
pub trait EvalSink {
    /// A network starts loading (`"CLIP openai/clip-vit-large-patch14"`).
    fn loading(&mut self, what: &str);
    /// The network begun last is loaded.
    fn loaded(&mut self) {}
    /// After each batch: `done` of `total` images of `stage`; `false` cancels.
    fn progress(&mut self, stage: Stage, done: usize, total: usize) -> bool;
    /// Something the user should know (FID on few images).
    fn warn(&mut self, message: &str);
}

/// The InceptionV3 file: `explicit`, else the cache's, else an error saying how to get it.
pub fn inception_path(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let default = cache_dir().map(|d| d.join(INCEPTION_FILE));
    match default {
        Some(p) if p.is_file() => Ok(p),
        _ => {
            let target =
                default.map_or_else(|| INCEPTION_FILE.to_string(), |p| p.display().to_string());
            refuse!(
                "FID needs pytorch-fid's InceptionV3 weights: download {INCEPTION_URL} and convert \
                 them once with: python -c \"import torch, safetensors.torch as s; \
                 s.save_file(torch.load('pt_inception-2015-12-05-6726825d.pth', map_location='cpu', \
                 weights_only=True), '{target}')\" (or pass the file with --inception)"
            )
        }
    }
}

/// Pairs results with prompts and content images from their ditail metadata, and leaves
/// out the images that carry none (a cocktail's contact sheet, pictures from elsewhere).
/// Generated images get their prompt only; transfers also their content image, found in
/// `content` by the hash of its pixels. Returns how many were left out.
pub fn pair_from_metadata(items: &mut Vec<Item>, content: Option<&[PathBuf]>) -> Result<usize> {
    let mut by_hash = BTreeMap::new();
    if let Some(content) = content {
        for p in content {
            let rgb = load_rgb(p).with_context(|| format!("content image {}", p.display()))?;
            by_hash.insert(image_hash(&rgb), p.clone());
        }
    }
    let before = items.len();
    let mut no_content = Vec::new();
    let mut kept = Vec::new();
    for mut item in items.drain(..) {
        let Some(rec) = read_record(&item.result) else {
            continue;
        };
        item.prompt = Some(rec.prompt.clone());
        if let (Some(d), Some(_)) = (&rec.ditail, content) {
            match by_hash.get(&d.content_sha256) {
                Some(p) => item.content = Some(p.clone()),
                None => no_content.push(item.name.clone()),
            }
        }
        kept.push(item);
    }
    *items = kept;
    if items.is_empty() {
        refuse!(
            "--from-metadata: no result carries ditail metadata (not ditail PNGs, or re-saved \
             by another program); give --prompts instead"
        );
    }
    if !no_content.is_empty() {
        refuse!(
            "--from-metadata: the content image of {} transfer(s) is not in the --content folder \
             (matched by the hash of its pixels, so the very file they were made from): {}",
            no_content.len(),
            no_content.join(", ")
        );
    }
    Ok(before - items.len())
}

/// The metric networks located and checked, not loaded.
pub struct Checked {
    clip: Option<(String, ClipPlan)>,
    dino: Option<(String, VitPlan)>,
    inception: Option<PathBuf>,
}

/// Locates and checks the networks a scoring will need (downloading them if need be),
/// before any long work.
pub fn check(
    nets: &EvalOptions,
    clip: bool,
    dino: bool,
    inception: Option<PathBuf>,
) -> Result<Checked> {
    let hub = HubOptions::from_env();
    Ok(Checked {
        clip: clip
            .then(|| plan_clip(&nets.clip, &hub).map(|p| (nets.clip.clone(), p)))
            .transpose()
            .context("--clip")?,
        dino: dino
            .then(|| plan_vit(&nets.dino, &hub).map(|p| (nets.dino.clone(), p)))
            .transpose()
            .context("--dino")?,
        inception,
    })
}

/// Loads the checked networks and scores `items` (and FID against `reference`).
pub fn score(
    items: &[Item],
    reference: &[PathBuf],
    checked: Checked,
    opts: &Options,
    compute: &Compute,
    sink: &mut dyn EvalSink,
) -> Result<Report> {
    let device = &compute.device;
    let mut nets = Networks::default();
    if let Some((name, plan)) = checked.clip {
        sink.loading(&format!("CLIP {name}"));
        nets.clip = Some(plan.load(device).context("--clip")?);
        sink.loaded();
    }
    if let Some((name, plan)) = checked.dino {
        sink.loading(&format!("DINO {name}"));
        nets.dino = Some(plan.load(device).context("--dino")?);
        sink.loaded();
    }
    if let Some(path) = &checked.inception {
        sink.loading(&format!("InceptionV3 {}", path.display()));
        nets.inception = Some(load_inception(path, device).context("--inception")?);
        sink.loaded();
    }
    let report = evaluate(
        items,
        reference,
        &nets,
        opts,
        device,
        &mut |stage, done, total| sink.progress(stage, done, total),
    )?
    .ok_or(PipelineError::Cancelled)?;
    if let Some(warning) = report.fid.as_ref().and_then(|f| f.warning.as_ref()) {
        sink.warn(warning);
    }
    Ok(report)
}

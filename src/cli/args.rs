//! The command line's flags. Their names are part of the interface: scripts and the README
//! rely on them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
pub use ditail::app::eval::EvalOptions;
pub use ditail::app::{DitailOptions, GenerationOptions, ModelOptions};
pub use ditail::serve::ServeArgs;

/// Diffusion Cocktail: mix Stable Diffusion 1.x or SDXL checkpoints and LoRAs without
/// training (source and target of one family).
///
/// An image is DDIM-inverted with a source model; a target model samples from those latents
/// while the source's structure is injected, so the result keeps the content and takes the
/// target's style. MODEL is a single .safetensors file (Civitai / A1111), a diffusers folder,
/// or a Hugging Face repo id (org/name[@revision]).
#[derive(Debug, Parser)]
#[command(name = "ditail", version, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Compute backend: auto = the best GPU found, else the CPU (with a warning).
    #[arg(long, global = true, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
    /// Float type of the weights and activations [default: f16 on a GPU, f32 on the CPU].
    #[arg(long, global = true, value_enum)]
    pub dtype: Option<DtypeArg>,
    /// Which device of the backend: the N-th wgpu adapter `ditail devices` lists, the N-th
    /// CUDA device (of those CUDA_VISIBLE_DEVICES leaves), 0 for the CPU [default: the
    /// backend's own choice]. One worker per GPU of a node: `--device $SLURM_LOCALID`.
    #[arg(long, global = true, value_name = "N", env = "DITAIL_DEVICE")]
    pub device: Option<usize>,
    /// No progress bars or informational messages (errors and warnings still go to stderr).
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Never download: models named by a Hugging Face repo id must be in the cache (as
    /// HF_HUB_OFFLINE=1).
    #[arg(long, global = true)]
    pub offline: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    Auto,
    Wgpu,
    Cuda,
    Cpu,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    F16,
    F32,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Transfer an image's content into a target model's style (the main job).
    Transfer(TransferArgs),
    /// Text to image with one model.
    Generate(GenerateArgs),
    /// Every content with every model: m models give m² images and a contact sheet.
    Cocktail(CocktailArgs),
    /// Invert an image once and save the latents, to sample many targets from later.
    Invert(InvertArgs),
    /// Run a CSV or JSONL manifest of transfers: resumable, shardable across jobs.
    Batch(BatchArgs),
    /// List the usable backends and GPU adapters.
    Devices,
    /// The web app: a local server with a page for transfers, cocktails and the gallery.
    Serve(ServeArgs),
    /// Score results as the paper does: CLIP score, structure distance (DINO), FID.
    Eval(EvalArgs),
}

/// `ditail eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The folder of results (ditail's PNGs, or any images).
    #[arg(long, value_name = "DIR")]
    pub results: PathBuf,
    /// The content images, paired with the results by file name (with --from-metadata, by
    /// the content hash ditail records): enables the structure distance.
    #[arg(long, value_name = "DIR")]
    pub content: Option<PathBuf>,
    /// The results' prompts: `name<TAB>prompt` lines or a JSON object {name: prompt}:
    /// enables the CLIP score.
    #[arg(long, value_name = "FILE", conflicts_with = "from_metadata")]
    pub prompts: Option<PathBuf>,
    /// Take each result's prompt, and with --content a transfer's content image, from the
    /// metadata ditail writes into its PNGs; images without it (a contact sheet) are left out.
    #[arg(long)]
    pub from_metadata: bool,
    /// A folder of reference images: enables the FID of the results against them.
    #[arg(long, value_name = "DIR")]
    pub reference: Option<PathBuf>,
    /// Also write the scores as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub nets: EvalOptions,
    /// pytorch-fid's InceptionV3 weights, converted to .safetensors [default:
    /// pt_inception-2015-12-05-6726825d.safetensors in ditail's cache folder].
    #[arg(long, value_name = "FILE")]
    pub inception: Option<PathBuf>,
    /// FID on the images as they are (pytorch-fid's own `fid_score`), instead of first
    /// squashing them to 224x224 as the Ditail reference does.
    #[arg(long)]
    pub fid_native: bool,
}

#[derive(Debug, Args)]
pub struct TransferArgs {
    /// The content image (PNG, JPEG or WebP); optional with --from-latents.
    #[arg(value_name = "IMAGE", required_unless_present = "from_latents")]
    pub image: Option<PathBuf>,
    /// The prompt p+ describing the result.
    #[arg(long, value_name = "TEXT")]
    pub prompt: String,
    /// The model that inverts the image.
    #[arg(long, value_name = "MODEL", required_unless_present = "from_latents")]
    pub source: Option<String>,
    /// The model that samples the result [default: --source].
    #[arg(long, value_name = "MODEL")]
    pub target: Option<String>,
    /// The output PNG.
    #[arg(short, long, value_name = "OUT.png")]
    pub output: PathBuf,
    #[command(flatten)]
    pub model: ModelOptions,
    #[command(flatten)]
    pub ditail: DitailOptions,
    /// Also save the inversion (and the final latents) for reuse with --from-latents.
    #[arg(long, value_name = "FILE")]
    pub save_latents: Option<PathBuf>,
    /// Also save the fully inverted noise Z[T], decoded, as a PNG.
    #[arg(long, value_name = "PNG")]
    pub save_noise: Option<PathBuf>,
    /// Skip inversion: sample from a latents file of `ditail invert` or --save-latents.
    #[arg(long, value_name = "FILE")]
    pub from_latents: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The prompt.
    #[arg(long, value_name = "TEXT")]
    pub prompt: String,
    /// The model.
    #[arg(long, value_name = "MODEL")]
    pub model: String,
    /// Noise seed [default: random, recorded in the PNG].
    #[arg(long)]
    pub seed: Option<u64>,
    /// The output PNG.
    #[arg(short, long, value_name = "OUT.png")]
    pub output: PathBuf,
    #[command(flatten)]
    pub model_flags: ModelOptions,
    #[command(flatten)]
    pub generation: GenerationOptions,
}

#[derive(Debug, Args)]
pub struct CocktailArgs {
    /// A model; repeat for each (m models give m² images per content).
    #[arg(long = "model", value_name = "MODEL", required = true)]
    pub models: Vec<String>,
    /// A content image; repeatable. Without images, each --prompt is generated by every
    /// model first.
    #[arg(long = "image", value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// With --image: the prompt (one for all images, or one per image). Without: a content
    /// prompt; repeatable.
    #[arg(long = "prompt", value_name = "TEXT")]
    pub prompts: Vec<String>,
    /// Seed of the content generation (prompt mode).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The output folder.
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Score every transfer (CLIP score with its prompt, structure distance to its content)
    /// and print models x models tables of the means; writes scores.json beside the images.
    #[arg(long)]
    pub eval: bool,
    #[command(flatten)]
    pub eval_nets: EvalOptions,
    #[command(flatten)]
    pub model: ModelOptions,
    #[command(flatten)]
    pub ditail: DitailOptions,
}

#[derive(Debug, Args)]
pub struct InvertArgs {
    /// The content image.
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,
    /// The model that inverts it.
    #[arg(long, value_name = "MODEL")]
    pub source: String,
    /// The positive inversion prompt.
    #[arg(long, value_name = "TEXT")]
    pub prompt: String,
    /// The negative inversion prompt.
    #[arg(long, value_name = "TEXT", default_value = ditail::pipeline::settings::DEFAULT_NEGATIVE)]
    pub negative_prompt: String,
    /// Condition scaling of the positive prompt.
    #[arg(long, default_value_t = ditail::pipeline::settings::defaults::ALPHA)]
    pub alpha: f64,
    /// Condition scaling of the negative prompt.
    #[arg(long, default_value_t = ditail::pipeline::settings::defaults::BETA)]
    pub beta: f64,
    /// DDIM inversion steps.
    #[arg(long, value_name = "N", default_value_t = ditail::pipeline::settings::defaults::STEPS)]
    pub inv_steps: usize,
    /// The image's shorter side is resized to N pixels; default: the model's family's
    /// native size, 512 (SD1.x) or 1024 (SDXL).
    #[arg(long, value_name = "N")]
    pub size: Option<u32>,
    /// The latents file to write.
    #[arg(short, long, value_name = "LATENTS")]
    pub output: PathBuf,
    #[command(flatten)]
    pub model: ModelOptions,
}

#[derive(Debug, Args)]
pub struct BatchArgs {
    /// The manifest: .csv (with a header row) or .jsonl (one object per line).
    #[arg(value_name = "MANIFEST")]
    pub manifest: PathBuf,
    /// The output folder (rows whose output is already complete there are skipped).
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Run only shard I of N (0-based): the manifest's rows cut into N runs of even work,
    /// rows that share an inversion or models kept together [default: from a Slurm job array
    /// (SLURM_ARRAY_TASK_ID and its range) or a Kubernetes Indexed Job
    /// (JOB_COMPLETION_INDEX with --shard-count), else every row].
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// The number of shards of a Kubernetes Indexed Job (its `completions`; Kubernetes
    /// gives each pod only its JOB_COMPLETION_INDEX) [env: DITAIL_SHARD_COUNT].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub shard_count: Option<u64>,
    /// Run nothing: say which rows are done, which failed (with the reasons the shards'
    /// summaries give) and which are missing; exit 1 unless every row is done.
    #[arg(long)]
    pub status: bool,
    /// Write what this task did (rows done, skipped, failed with why, not run) to
    /// batch-summary.json in the output folder; a shard of several always writes its
    /// batch-summary-I-of-N.json, which `--status` reads.
    #[arg(long)]
    pub summary: bool,
    /// Source model for rows that name none.
    #[arg(long, value_name = "MODEL")]
    pub source: Option<String>,
    /// Target model for rows that name none [default: the row's source].
    #[arg(long, value_name = "MODEL")]
    pub target: Option<String>,
    /// Score the shard's completed rows at the end (CLIP score with the row's prompt,
    /// structure distance to its image); writes eval.json (eval-I-of-N.json for a shard)
    /// to the output folder.
    #[arg(long)]
    pub eval: bool,
    #[command(flatten)]
    pub eval_nets: EvalOptions,
    #[command(flatten)]
    pub model: ModelOptions,
    #[command(flatten)]
    pub ditail: DitailOptions,
}

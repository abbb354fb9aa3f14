//! `ditail serve`'s flags.

use std::path::PathBuf;

use clap::Args;

/// `ditail serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A folder of models (checkpoints, diffusers folders, LoRAs, VAEs; A1111, ComfyUI and
    /// Hugging Face cache layouts are recognised); repeatable.
    #[arg(long = "models", value_name = "DIR")]
    pub models: Vec<PathBuf>,
    /// Where results are written (and the gallery is read from).
    #[arg(short, long, value_name = "DIR", default_value = "ditail-outputs")]
    pub output: PathBuf,
    /// The address to listen on; anything but a loopback address lets other machines in.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// The port (0: any free port).
    #[arg(long, default_value_t = 7860)]
    pub port: u16,
    /// Require this bearer token on every request [env: DITAIL_TOKEN].
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Memory for loaded models, in GiB (least recently used models are dropped beyond it).
    #[arg(long, value_name = "GB", default_value_t = 8.0)]
    pub cache_gb: f64,
    /// Open the page in the default browser.
    #[arg(long)]
    pub open: bool,
}

//! The models a server offers: checkpoints, LoRAs and VAEs found under the `--models`
//! folders, in the layouts people have (A1111's `models/Stable-diffusion`, `models/Lora`,
//! `models/VAE`; ComfyUI's `models/checkpoints`, `models/loras`, `models/vae`; plain
//! folders; the Hugging Face cache's `models--org--name/snapshots/REV`). Each file is
//! classified from its safetensors header and planned by the loader (headers only, no
//! weights read), so unusable files are listed with the loader's own reason.
//!
//! Clients name models by the ids listed here, never by path: an id is a hash of the
//! file's path, stable across rescans and restarts.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use ditail::models::load::lora::{LoraSet, LoraSpec};
use ditail::models::load::{plan_vae_spec, reject_pickle};
use ditail::models::{Family, LoadOptions};
use ditail::pipeline::ModelSpec;
use ditail::pipeline::prompt::Embedding;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Folders deeper than this below a root are not searched (nobody nests models deeper;
/// it also bounds a walk through an unexpected tree).
const MAX_DEPTH: usize = 8;
/// Trigger words shown per LoRA.
const MAX_TRIGGERS: usize = 12;
/// Headers larger than this are not read for metadata (real ones are well under 1 MB).
const MAX_HEADER: u64 = 64 << 20;

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A whole model (a single file or a diffusers folder).
    Checkpoint,
    /// A LoRA.
    Lora,
    /// A VAE.
    Vae,
    /// A textual-inversion embedding (named in prompts).
    Embedding,
}

impl Kind {
    /// The kind in words, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Checkpoint => "checkpoint",
            Kind::Lora => "LoRA",
            Kind::Vae => "VAE",
            Kind::Embedding => "embedding",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Kind::Checkpoint => "c",
            Kind::Lora => "l",
            Kind::Vae => "v",
            Kind::Embedding => "e",
        }
    }
}

/// One model file or folder.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    /// The id clients use (`c-`, `l-`, `v-` and 10 hex digits of the path's SHA-256).
    pub id: String,
    /// Checkpoint, LoRA, VAE or embedding.
    pub kind: Kind,
    /// File stem, folder name, or `org/name` for the hub cache.
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
    /// `diffusers` (a folder) or `single-file`.
    pub format: &'static str,
    /// The model family when known (`SD1.x`, or what the loader named).
    pub architecture: Option<String>,
    /// Whether ditail can use it.
    pub usable: bool,
    /// Why not, in the loader's words.
    pub reason: Option<String>,
    /// LoRAs: the most frequent training tags (`ss_tag_frequency`), most frequent first.
    pub triggers: Vec<String>,
}

/// The listing the API returns.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Listing {
    /// Checkpoints (single files and diffusers folders).
    pub checkpoints: Vec<Entry>,
    /// LoRAs.
    pub loras: Vec<Entry>,
    /// VAEs.
    pub vaes: Vec<Entry>,
    /// Textual-inversion embeddings (prompts name them; `architecture` says the family).
    pub embeddings: Vec<Entry>,
}

/// Everything found under the roots.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    entries: Vec<Entry>,
}

impl Catalog {
    /// Walks `roots` and plans every model found (headers only).
    pub fn scan(roots: &[PathBuf], opts: LoadOptions) -> Self {
        let mut found = Vec::new();
        let mut seen = HashSet::new();
        for root in roots {
            walk(root, 0, None, &mut seen, &mut found);
        }
        let mut entries: Vec<Entry> = found
            .into_iter()
            .map(|(path, hint)| classify(&path, hint, opts))
            .collect();
        entries.sort_by(|a, b| (a.kind as u8, &a.name).cmp(&(b.kind as u8, &b.name)));
        entries.dedup_by(|a, b| a.id == b.id);
        Self { entries }
    }

    /// The entry with this id.
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// The entry of this path (as recorded in an output), if still listed.
    pub fn by_path(&self, path: &str) -> Option<&Entry> {
        let canonical = std::fs::canonicalize(path).ok();
        self.entries
            .iter()
            .find(|e| e.path.as_os_str() == path || Some(&e.path) == canonical.as_ref())
    }

    /// The entries by kind.
    pub fn listing(&self) -> Listing {
        let of = |k: Kind| {
            self.entries
                .iter()
                .filter(|e| e.kind == k)
                .cloned()
                .collect()
        };
        Listing {
            checkpoints: of(Kind::Checkpoint),
            loras: of(Kind::Lora),
            vaes: of(Kind::Vae),
            embeddings: of(Kind::Embedding),
        }
    }

    /// The folders of the usable embeddings, in the order found: what jobs read
    /// embeddings from.
    pub fn embedding_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for e in &self.entries {
            if e.kind == Kind::Embedding
                && e.usable
                && let Some(dir) = e.path.parent()
                && !dirs.iter().any(|d| d == dir)
            {
                dirs.push(dir.to_path_buf());
            }
        }
        dirs
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no model was found.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What a folder's name says its files are (`Lora`, `loras`, `VAE`, ...).
fn hint_of(dir: &Path) -> Option<Kind> {
    let name = dir.file_name()?.to_string_lossy().to_ascii_lowercase();
    if name.contains("lora") || name.contains("lycoris") {
        Some(Kind::Lora)
    } else if [
        "embeddings",
        "embedding",
        "textual_inversion",
        "textual-inversion",
    ]
    .contains(&name.as_str())
    {
        Some(Kind::Embedding)
    } else if name == "vae" || name == "vae-approx" {
        Some(Kind::Vae)
    } else if ["stable-diffusion", "checkpoints", "diffusers"].contains(&name.as_str()) {
        Some(Kind::Checkpoint)
    } else {
        None
    }
}

fn is_diffusers_model(dir: &Path) -> bool {
    dir.join("model_index.json").is_file()
        || (dir.join("unet").is_dir() && dir.join("vae").is_dir())
}

fn is_diffusers_vae(dir: &Path) -> bool {
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap_or_default();
    config.contains("\"latent_channels\"") && config.contains("AutoencoderKL")
}

fn is_weight_file(path: &Path) -> bool {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    matches!(
        ext.as_deref(),
        Some("safetensors" | "ckpt" | "pt" | "pth" | "bin")
    )
}

/// Collects model files and folders below `dir` (symlinks followed, each real folder
/// once, so links and loops are harmless).
fn walk(
    dir: &Path,
    depth: usize,
    hint: Option<Kind>,
    seen: &mut HashSet<PathBuf>,
    found: &mut Vec<(PathBuf, Option<Kind>)>,
) {
    let Ok(real) = std::fs::canonicalize(dir) else {
        return;
    };
    if depth > MAX_DEPTH || !seen.insert(real) {
        return;
    }
    if is_diffusers_model(dir) {
        found.push((dir.to_path_buf(), Some(Kind::Checkpoint)));
        return;
    }
    if is_diffusers_vae(dir) {
        found.push((dir.to_path_buf(), Some(Kind::Vae)));
        return;
    }
    let hint = hint_of(dir).or(hint);
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    let mut children: Vec<PathBuf> = read.filter_map(|e| e.ok().map(|e| e.path())).collect();
    children.sort();
    for path in children {
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, depth + 1, hint, seen, found);
        } else if path.is_file() && is_weight_file(&path) {
            // Diffusers' own component files inside a model folder were handled above;
            // a loose `*.bin` outside such a folder is still a pickle worth naming.
            found.push((path, hint));
        }
    }
}

/// A display name: the file stem, the folder's name, or `org/name` for a hub snapshot.
fn display_name(path: &Path) -> String {
    let components: Vec<String> = path
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if let Some(i) = components.iter().rposition(|c| c == "snapshots")
        && i > 0
        && let Some(repo) = components[i - 1].strip_prefix("models--")
    {
        return repo.replacen("--", "/", 1);
    }
    if path.is_dir() {
        path.file_name()
    } else {
        path.file_stem()
    }
    .map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The id of a path.
pub fn id_of(kind: Kind, path: &Path) -> String {
    let digest = Sha256::digest(path.as_os_str().as_encoded_bytes());
    let hex: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", kind.prefix())
}

/// The keys of a safetensors file and its `__metadata__`, from the header alone.
fn read_header(path: &Path) -> Result<(Vec<String>, BTreeMap<String, String>), String> {
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|_| "not a safetensors file (shorter than its header length)".to_string())?;
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER {
        return Err(format!("not a safetensors file (header length {len})"));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header)
        .map_err(|_| "not a safetensors file (truncated header)".to_string())?;
    let json: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| format!("not a safetensors file (header: {e})"))?;
    let mut metadata = BTreeMap::new();
    if let Some(serde_json::Value::Object(m)) = json.get("__metadata__") {
        for (k, v) in m {
            if let serde_json::Value::String(s) = v {
                metadata.insert(k.clone(), s.clone());
            }
        }
    }
    let keys = json
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    Ok((keys, metadata))
}

/// What a safetensors file holds, from its keys.
fn kind_from_keys(keys: &[String]) -> Option<Kind> {
    let any = |f: &dyn Fn(&str) -> bool| keys.iter().any(|k| f(k));
    let only = |names: &[&str]| {
        keys.len() == names.len() && names.iter().all(|n| keys.iter().any(|k| k == n))
    };
    if only(&["emb_params"])
        || only(&["clip_l", "clip_g"])
        || (!keys.is_empty() && keys.iter().all(|k| k.starts_with("string_to_param.")))
    {
        Some(Kind::Embedding)
    } else if any(&|k| {
        k.starts_with("lora_")
            || k.contains(".lora_")
            || k.contains(".lora.")
            || k.contains("hada_w")
            || k.contains("lokr_w")
    }) {
        Some(Kind::Lora)
    } else if any(&|k| {
        k.starts_with("model.diffusion_model.")
            || k.starts_with("conditioner.")
            || k.starts_with("cond_stage_model.")
            || k.contains("double_blocks.")
            || k.contains("joint_blocks.")
    }) {
        Some(Kind::Checkpoint)
    } else if !keys.is_empty()
        && keys.iter().all(|k| {
            [
                "encoder.",
                "decoder.",
                "quant_conv.",
                "post_quant_conv.",
                "first_stage_model.",
            ]
            .iter()
            .any(|p| k.starts_with(p))
        })
    {
        Some(Kind::Vae)
    } else {
        None
    }
}

/// The most frequent tags of a kohya LoRA's `ss_tag_frequency` (`{dataset: {tag: n}}`).
fn triggers(metadata: &BTreeMap<String, String>) -> Vec<String> {
    let Some(text) = metadata.get("ss_tag_frequency") else {
        return Vec::new();
    };
    let Ok(serde_json::Value::Object(sets)) = serde_json::from_str(text) else {
        return Vec::new();
    };
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for set in sets.values() {
        if let serde_json::Value::Object(tags) = set {
            for (tag, n) in tags {
                let tag = tag.trim();
                if !tag.is_empty() && tag.chars().count() <= 100 {
                    *counts.entry(tag.to_string()).or_default() += n.as_u64().unwrap_or(0);
                }
            }
        }
    }
    let mut ranked: Vec<(String, u64)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked
        .into_iter()
        .take(MAX_TRIGGERS)
        .map(|(t, _)| t)
        .collect()
}

/// The architecture a failed plan names (`unsupported architecture: Flux (...)` -> `Flux`),
/// read from the named part only (the rest of the message lists what ditail runs).
fn architecture_in(reason: &str) -> Option<String> {
    let found = reason.split("unsupported architecture: ").nth(1)?;
    let reason = found.split(" (ditail runs").next().unwrap_or(found);
    if reason.contains("SDXL") {
        Some("SDXL".into())
    } else if reason.contains("Stable Diffusion 2") {
        Some("SD2.x".into())
    } else if reason.contains("Stable Diffusion 3") {
        Some("SD3".into())
    } else if reason.contains("Flux") {
        Some("Flux".into())
    } else {
        None
    }
}

/// Classifies and plans one file or folder.
fn classify(path: &Path, hint: Option<Kind>, opts: LoadOptions) -> Entry {
    let is_dir = path.is_dir();
    let mut entry = Entry {
        id: String::new(),
        kind: hint.unwrap_or(Kind::Checkpoint),
        name: display_name(path),
        path: std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
        format: if is_dir { "diffusers" } else { "single-file" },
        architecture: None,
        usable: false,
        reason: None,
        triggers: Vec::new(),
    };
    let outcome: Result<Option<&str>, String> = if entry.kind == Kind::Embedding && !is_dir {
        // In an embeddings folder: the embedding reader names the layout, and an A1111
        // `.pt`'s conversion (not a checkpoint's).
        plan(Kind::Embedding, &entry.path, opts)
    } else if !is_dir && reject_pickle(path).is_err() {
        Err(reject_pickle(path).expect_err("checked").to_string())
    } else if is_dir {
        plan(entry.kind, &entry.path, opts)
    } else {
        match read_header(path) {
            Err(reason) => Err(reason),
            Ok((keys, metadata)) => {
                if let Some(kind) = kind_from_keys(&keys) {
                    entry.kind = kind;
                }
                if entry.kind == Kind::Lora {
                    entry.triggers = triggers(&metadata);
                    if keys
                        .iter()
                        .any(|k| k.starts_with("lora_te1_") || k.starts_with("lora_te2_"))
                    {
                        entry.architecture = Some("SDXL".into());
                    }
                }
                plan(entry.kind, &entry.path, opts)
            }
        }
    };
    match outcome {
        Ok(family) => {
            entry.usable = true;
            // A LoRA names its family by its text-encoder modules (SDXL's set above).
            entry.architecture = family
                .map(String::from)
                .or(entry.architecture)
                .or_else(|| Some("SD1.x".into()));
        }
        Err(reason) => {
            entry.architecture = entry.architecture.or_else(|| architecture_in(&reason));
            entry.reason = Some(reason);
        }
    }
    entry.id = id_of(entry.kind, &entry.path);
    entry
}

/// Asks the loader whether it can use `path` as `kind` (headers only); for a checkpoint,
/// returns its family's short name.
fn plan(kind: Kind, path: &Path, opts: LoadOptions) -> Result<Option<&'static str>, String> {
    let name = path.to_string_lossy().into_owned();
    match kind {
        Kind::Checkpoint => ModelSpec::new(name)
            .plan(opts)
            .map(|(_, plan)| {
                Some(match plan.family() {
                    Family::Sd1 => "SD1.x",
                    Family::Sdxl => "SDXL",
                })
            })
            .map_err(|e| e.to_string()),
        Kind::Lora => LoraSet::open(&[LoraSpec {
            path: path.to_path_buf(),
            scale: 1.0,
        }])
        .map(|_| None)
        .map_err(|e| e.to_string()),
        Kind::Vae => plan_vae_spec(&name, opts)
            .map(|_| None)
            .map_err(|e| e.to_string()),
        Kind::Embedding => Embedding::read(path)
            .map(|e| {
                Some(if e.widths().len() == 1 {
                    "SD1.x"
                } else {
                    "SDXL"
                })
            })
            .map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_snapshots_are_named_by_repo() {
        let p = Path::new("/c/hub/models--org--my-model/snapshots/abc123");
        assert_eq!(display_name(p), "org/my-model");
    }

    #[test]
    fn keys_say_what_a_file_is() {
        let keys = |ks: &[&str]| ks.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            kind_from_keys(&keys(&["lora_unet_x.lora_down.weight"])),
            Some(Kind::Lora)
        );
        assert_eq!(
            kind_from_keys(&keys(&["unet.a.lora_A.weight"])),
            Some(Kind::Lora)
        );
        assert_eq!(
            kind_from_keys(&keys(&["model.diffusion_model.input_blocks.0.0.weight"])),
            Some(Kind::Checkpoint)
        );
        assert_eq!(
            kind_from_keys(&keys(&["decoder.conv_in.weight", "encoder.x"])),
            Some(Kind::Vae)
        );
        assert_eq!(kind_from_keys(&keys(&["something.else"])), None);
    }

    #[test]
    fn triggers_rank_tags_over_datasets() {
        let mut m = BTreeMap::new();
        m.insert(
            "ss_tag_frequency".to_string(),
            r#"{"a": {"cat": 3, "dog": 1}, "b": {"dog": 5, " ": 9}}"#.to_string(),
        );
        assert_eq!(triggers(&m), vec!["dog".to_string(), "cat".to_string()]);
    }
}

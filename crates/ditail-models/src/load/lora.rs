//! LoRAs merged into the weights at load: kohya/A1111 (`lora_unet_*`, `lora_te_*`; SDXL's
//! `lora_te1_*` / `lora_te2_*` for its two text encoders and LDM module names in the U-Net,
//! `lora_unet_input_blocks_4_1_…`; `.lora_down` / `.lora_up` / `.alpha`, LoCon convs
//! included) and diffusers/PEFT (`unet.*` / `text_encoder.*` / `text_encoder_2.*` with
//! `.lora_A` / `.lora_B` or `.lora.down` / `.lora.up`).
//!
//! `W += multiplier · alpha / rank · up @ down` (alpha absent: alpha = rank), added while
//! the base tensor is converted, so nothing is held twice. Kohya names are matched by
//! walking the model's own module paths (`a.b.c` ↔ `lora_unet_a_b_c`), never by guessing
//! where underscores were dots. A key that matches no module is an error listing it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use safetensors::Dtype;

use super::lora_term::LoraTerm;
use super::safetensors::check_float;
use super::{Component, Source, TensorEntry, WeightFile, decode_f32};
use crate::error::{ModelError, Result};
use crate::unet::UNetConfig;

/// A LoRA file and its multiplier.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraSpec {
    /// The `.safetensors` file.
    pub path: PathBuf,
    /// The multiplier (the reference's default is 0.7).
    pub scale: f32,
}

/// The parsed LoRA files of one load, waiting to be attached to the model's weights.
#[derive(Debug, Default)]
pub struct LoraSet {
    /// `(component, module path)` → its updates.
    terms: BTreeMap<(ComponentKey, String), Vec<LoraTerm>>,
    /// Kohya modules by their underscore name, resolved once the model's paths are known.
    kohya: BTreeMap<String, Vec<(String, LoraTerm)>>,
    /// Where each module came from, for messages.
    origin: BTreeMap<String, PathBuf>,
    used: BTreeSet<String>,
    /// Updates whose shape differs from the weight they matched.
    misfits: Vec<(PathBuf, String)>,
    /// A module only an SDXL model has (its second text encoder, `lora_te1_`), and one
    /// only SD1.x has (`lora_te_`): a file and the module, for the family check.
    sdxl_module: Option<(PathBuf, String)>,
    sd1_module: Option<(PathBuf, String)>,
}

/// [`Component`] as an ordered key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum ComponentKey {
    TextEncoder,
    TextEncoder2,
    Unet,
}

impl ComponentKey {
    const ALL: [Self; 3] = [Self::TextEncoder, Self::TextEncoder2, Self::Unet];

    fn of(c: Component) -> Option<Self> {
        match c {
            Component::TextEncoder => Some(Self::TextEncoder),
            Component::TextEncoder2 => Some(Self::TextEncoder2),
            Component::Unet => Some(Self::Unet),
            _ => None,
        }
    }

    /// The diffusers/PEFT prefix of the component's modules.
    fn peft(self) -> &'static str {
        match self {
            Self::TextEncoder => "text_encoder",
            Self::TextEncoder2 => "text_encoder_2",
            Self::Unet => "unet",
        }
    }

    /// The kohya prefixes of the component's modules (SD1.x's and SDXL's).
    fn kohya(self) -> &'static [&'static str] {
        match self {
            Self::TextEncoder => &["lora_te_", "lora_te1_"],
            Self::TextEncoder2 => &["lora_te2_"],
            Self::Unet => &["lora_unet_"],
        }
    }
}

fn lora_error(path: &Path, reason: String) -> ModelError {
    ModelError::Lora {
        path: path.to_path_buf(),
        reason,
    }
}

/// The low-rank pair of one module as it appears in a file.
#[derive(Default)]
struct Pair {
    down: Option<TensorEntry>,
    up: Option<TensorEntry>,
    alpha: Option<f32>,
}

impl LoraSet {
    /// Reads the LoRA files (headers and alphas only) and checks their format.
    pub fn open(specs: &[LoraSpec]) -> Result<Self> {
        let mut set = Self::default();
        for spec in specs {
            super::reject_pickle(&spec.path)?;
            let file = WeightFile::open(&spec.path)?;
            set.add(&file, spec)?;
        }
        Ok(set)
    }

    fn add(&mut self, file: &Arc<WeightFile>, spec: &LoraSpec) -> Result<()> {
        let path = &spec.path;
        let mut pairs: BTreeMap<String, Pair> = BTreeMap::new();
        for e in file.tensors() {
            let name = e.name.as_str();
            for marker in ["hada_w1", "hada_w2", "lokr_w1", "lokr_w2", ".oft_", ".diff"] {
                if name.contains(marker) {
                    let kind = if marker.starts_with("hada") {
                        "LoHa"
                    } else if marker.starts_with("lokr") {
                        "LoKr"
                    } else {
                        "non-LoRA (OFT/diff)"
                    };
                    return Err(lora_error(
                        path,
                        format!(
                            "`{name}` is a {kind} tensor; only LoRA/LoCon (down/up) is supported"
                        ),
                    ));
                }
            }
            let (module, role) = if let Some(m) = name.strip_suffix(".lora_down.weight") {
                (m, 0)
            } else if let Some(m) = name.strip_suffix(".lora_up.weight") {
                (m, 1)
            } else if let Some(m) = name.strip_suffix(".alpha") {
                (m, 2)
            } else if let Some(m) = name
                .strip_suffix(".lora_A.weight")
                .or_else(|| name.strip_suffix(".lora.down.weight"))
            {
                (m, 0)
            } else if let Some(m) = name
                .strip_suffix(".lora_B.weight")
                .or_else(|| name.strip_suffix(".lora.up.weight"))
            {
                (m, 1)
            } else {
                return Err(lora_error(
                    path,
                    format!(
                        "unrecognised key `{name}` (expected .lora_down/.lora_up/.alpha or .lora_A/.lora_B)"
                    ),
                ));
            };
            let pair = pairs.entry(module.to_string()).or_default();
            match role {
                0 => pair.down = Some(e.clone()),
                1 => pair.up = Some(e.clone()),
                _ => {
                    if !matches!(e.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64)
                        || e.shape.iter().product::<usize>() != 1
                    {
                        return Err(lora_error(path, format!("`{name}` must be one float")));
                    }
                    let alpha = decode_f32(file.raw(e), e.dtype)[0];
                    if !alpha.is_finite() {
                        return Err(lora_error(
                            path,
                            format!(
                                "`{name}` is {alpha}: the LoRA's scale must be a finite number"
                            ),
                        ));
                    }
                    pair.alpha = Some(alpha);
                }
            }
        }
        for (module, pair) in pairs {
            let (Some(down), Some(up)) = (pair.down, pair.up) else {
                return Err(lora_error(
                    path,
                    format!("module `{module}` lacks its down or up matrix"),
                ));
            };
            for e in [&down, &up] {
                check_float(path, e)?;
                if !matches!(e.shape.len(), 2 | 4) {
                    return Err(lora_error(
                        path,
                        format!(
                            "`{}` has shape {:?}: a LoRA matrix has 2 (linear) or 4 (conv) dimensions",
                            e.name, e.shape
                        ),
                    ));
                }
            }
            let rank = down.shape[0];
            if rank == 0 {
                return Err(lora_error(
                    path,
                    format!(
                        "module `{module}` has rank 0 (down {:?}, up {:?}): an empty update",
                        down.shape, up.shape
                    ),
                ));
            }
            if up.shape.get(1) != Some(&rank) {
                return Err(lora_error(
                    path,
                    format!(
                        "module `{module}`: down {:?} and up {:?} do not share a rank",
                        down.shape, up.shape
                    ),
                ));
            }
            let factor = spec.scale * pair.alpha.unwrap_or(rank as f32) / rank as f32;
            let term = LoraTerm {
                file: file.clone(),
                down,
                up,
                factor,
                row_offset: 0,
            };
            if ["lora_te1_", "lora_te2_", "text_encoder_2."]
                .iter()
                .any(|p| module.starts_with(p))
            {
                self.sdxl_module
                    .get_or_insert_with(|| (path.clone(), module.clone()));
            } else if module.starts_with("lora_te_") {
                self.sd1_module
                    .get_or_insert_with(|| (path.clone(), module.clone()));
            }
            let text = [ComponentKey::TextEncoder2, ComponentKey::TextEncoder]
                .into_iter()
                .find_map(|ck| Some((ck, module.strip_prefix(ck.peft())?.strip_prefix('.')?)));
            if let Some(p) = module.strip_prefix("unet.") {
                self.origin.insert(module.clone(), path.clone());
                self.terms
                    .entry((ComponentKey::Unet, p.to_string()))
                    .or_default()
                    .push(term);
            } else if let Some((ck, p)) = text {
                let p = if p.starts_with("text_model.") || p.starts_with("text_projection") {
                    p.to_string()
                } else {
                    format!("text_model.{p}")
                };
                self.origin
                    .insert(format!("{}.{p}", ck.peft()), path.clone());
                self.terms.entry((ck, p)).or_default().push(term);
            } else if ComponentKey::ALL
                .iter()
                .flat_map(|ck| ck.kohya())
                .any(|p| module.starts_with(p))
            {
                self.origin.insert(module.clone(), path.clone());
                self.kohya
                    .entry(module.clone())
                    .or_default()
                    .push((module, term));
            } else {
                return Err(lora_error(
                    path,
                    format!(
                        "module `{module}` is neither kohya (lora_unet_/lora_te_/lora_te1_/lora_te2_) nor diffusers (unet./text_encoder./text_encoder_2.)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Fails, naming the file and a module, when a LoRA is for the other model family: the
    /// text-encoder modules say which (SDXL's `lora_te1_`/`lora_te2_`/`text_encoder_2.`,
    /// SD1.x's `lora_te_`); the U-Net's names alone may fit both.
    pub fn check_family(&self, family: crate::Family) -> Result<()> {
        let wrong = match family {
            crate::Family::Sd1 => self.sdxl_module.as_ref().map(|m| (m, "an SDXL")),
            crate::Family::Sdxl => self.sd1_module.as_ref().map(|m| (m, "an SD1.x")),
        };
        match wrong {
            Some(((path, module), kind)) => Err(lora_error(
                path,
                format!(
                    "module `{module}` makes this {kind} LoRA, which does not fit this {family} model"
                ),
            )),
            None => Ok(()),
        }
    }

    /// Whether there is nothing to merge.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty() && self.kohya.is_empty()
    }

    /// Attaches the updates for `component` to its weight sources (diffusers names).
    pub fn attach(&mut self, component: Component, sources: &mut [(String, Source)]) {
        self.attach_with(component, sources, |_| None);
    }

    /// Attaches the U-Net's updates, matching kohya names written with LDM module paths
    /// too (SDXL's LoRAs: `lora_unet_input_blocks_4_1_…`, see `ldm::unet_ldm_key`).
    pub fn attach_unet(&mut self, sources: &mut [(String, Source)], config: &UNetConfig) {
        let up_attn = |b: usize| {
            config
                .up_block_types
                .get(b)
                .is_some_and(|t| t.starts_with("CrossAttn"))
        };
        self.attach_with(Component::Unet, sources, |module| {
            let key = super::ldm::unet_ldm_key(
                &format!("{module}.weight"),
                config.layers_per_block,
                up_attn,
            )?;
            Some(key.strip_suffix(".weight")?.to_string())
        });
    }

    /// [`LoraSet::attach`], with `alias` giving another name a kohya file may use for a
    /// module.
    fn attach_with(
        &mut self,
        component: Component,
        sources: &mut [(String, Source)],
        alias: impl Fn(&str) -> Option<String>,
    ) {
        let Some(ck) = ComponentKey::of(component) else {
            return;
        };
        for (key, source) in sources.iter_mut() {
            let Some(module) = key.strip_suffix(".weight") else {
                continue;
            };
            let names: Vec<String> = std::iter::once(module.to_string())
                .chain(alias(module))
                .flat_map(|m| {
                    ck.kohya()
                        .iter()
                        .map(move |prefix| format!("{prefix}{}", m.replace('.', "_")))
                })
                .collect();
            let shape = source.shape();
            let offset = source.rows.as_ref().map_or(0, |r| r.start);
            let at_rows = |t: &LoraTerm| LoraTerm {
                row_offset: offset,
                ..t.clone()
            };
            let mut fits = |t: &LoraTerm| match t.check_fits(module, &shape) {
                Ok(()) => true,
                Err(e) => {
                    self.misfits.push((t.file.path().to_path_buf(), e));
                    false
                }
            };
            for kohya_name in names {
                if let Some(terms) = self.kohya.get(&kohya_name) {
                    source.lora.extend(
                        terms
                            .iter()
                            .map(|(_, t)| t)
                            .filter(|t| fits(t))
                            .map(at_rows),
                    );
                    self.used.insert(kohya_name);
                }
            }
            if let Some(terms) = self.terms.get(&(ck, module.to_string())) {
                source
                    .lora
                    .extend(terms.iter().filter(|t| fits(t)).map(at_rows));
                self.used.insert(format!("{}.{module}", ck.peft()));
            }
        }
    }

    /// Fails, listing them, if some LoRA modules matched no weight of the model or matched
    /// one of another size.
    pub fn check_all_used(&self) -> Result<()> {
        if let Some((path, _)) = self.misfits.first() {
            let list: Vec<&str> = self
                .misfits
                .iter()
                .take(10)
                .map(|(_, e)| e.as_str())
                .collect();
            return Err(lora_error(
                path,
                format!(
                    "{} LoRA module(s) do not fit this model's layer sizes (a LoRA made for another model?): {}",
                    self.misfits.len(),
                    list.join("; ")
                ),
            ));
        }
        let mut unused: Vec<String> = self
            .kohya
            .keys()
            .filter(|k| !self.used.contains(*k))
            .cloned()
            .collect();
        for (ck, p) in self.terms.keys() {
            let name = format!("{}.{p}", ck.peft());
            if !self.used.contains(&name) {
                unused.push(name);
            }
        }
        if unused.is_empty() {
            return Ok(());
        }
        let files: BTreeSet<String> = unused
            .iter()
            .filter_map(|u| self.origin.get(u))
            .map(|p| p.display().to_string())
            .collect();
        let path = files.iter().next().cloned().unwrap_or_default();
        let is = |prefixes: &[&str]| {
            unused
                .iter()
                .any(|u| prefixes.iter().any(|p| u.starts_with(p)))
        };
        let hint = if is(&["lora_te1_", "lora_te2_", "text_encoder_2."]) {
            "an SDXL LoRA on a model that is not SDXL?"
        } else if is(&["lora_te_"]) {
            "an SD1.x LoRA on an SDXL model?"
        } else {
            "a LoRA for another architecture?"
        };
        Err(lora_error(
            Path::new(&path),
            format!(
                "{} LoRA module(s) match nothing in this model ({hint}): {}",
                unused.len(),
                unused
                    .iter()
                    .take(20)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))
    }
}

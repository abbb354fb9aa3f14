//! The gallery: the PNGs in the output folder, newest first, each described by its own
//! `ditail` chunk (so nothing kept beside the files can disagree with them). Records are
//! cached by name, size and modification time; only files a listing returns are served.

use std::collections::HashMap;
use std::path::Path;
use std::time::UNIX_EPOCH;

use serde::Serialize;

use super::catalog::Catalog;
use super::settings::{JobSettings, LoraChoice, Mode, Variant};
use ditail::app::record::{ModelRecord, Record, read_record};

/// One image of the gallery.
#[derive(Clone, Debug, Serialize)]
pub struct Item {
    /// The file name.
    pub name: String,
    /// Where the API serves it.
    pub url: String,
    /// Unix seconds.
    pub mtime: u64,
    /// The PNG's `ditail` record.
    pub record: Record,
    /// The record as job settings with the catalog's ids, when its models are listed.
    pub settings: Option<JobSettings>,
    /// The content image and painted mask of the job that made it, while the server keeps
    /// them (the last finished jobs' inputs), for "reuse settings".
    pub content_url: Option<String>,
    /// See `content_url`.
    pub mask_url: Option<String>,
}

/// Records read so far: name -> (size, mtime, record).
#[derive(Default)]
pub struct Gallery {
    cache: HashMap<String, (u64, u64, Option<Record>)>,
}

/// Whether `name` is a plain PNG file name (no folders, no hidden files): the only names
/// the gallery lists or serves.
pub fn valid_name(name: &str) -> bool {
    name.len() <= 255
        && !name.starts_with('.')
        && name.to_ascii_lowercase().ends_with(".png")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

impl Gallery {
    /// The gallery of `dir`, newest first.
    pub fn list(&mut self, dir: &Path, catalog: &Catalog) -> Vec<Item> {
        let mut items = Vec::new();
        let Ok(read) = std::fs::read_dir(dir) else {
            return items;
        };
        let mut present = Vec::new();
        for entry in read.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = entry.metadata() else { continue };
            if !valid_name(&name) || !meta.is_file() {
                continue;
            }
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            let size = meta.len();
            let cached = self
                .cache
                .get(&name)
                .filter(|c| c.0 == size && c.1 == mtime);
            let record = match cached {
                Some(c) => c.2.clone(),
                None => {
                    let record = read_record(&entry.path());
                    self.cache
                        .insert(name.clone(), (size, mtime, record.clone()));
                    record
                }
            };
            present.push(name.clone());
            if let Some(record) = record {
                items.push(Item {
                    url: format!("/api/results/{name}"),
                    settings: settings_of(&record, catalog),
                    name,
                    mtime,
                    record,
                    content_url: None,
                    mask_url: None,
                });
            }
        }
        self.cache.retain(|k, _| present.contains(k));
        items.sort_by(|a, b| b.mtime.cmp(&a.mtime).then_with(|| b.name.cmp(&a.name)));
        items
    }
}

fn variant_of(m: &ModelRecord, catalog: &Catalog) -> Option<Variant> {
    Some(Variant {
        model: catalog.by_path(&m.model)?.id.clone(),
        loras: m
            .loras
            .iter()
            .map(|l| {
                Some(LoraChoice {
                    id: catalog.by_path(&l.path)?.id.clone(),
                    scale: l.scale,
                })
            })
            .collect::<Option<_>>()?,
        vae: match &m.vae {
            Some(v) => Some(catalog.by_path(v)?.id.clone()),
            None => None,
        },
        clip_skip: m.clip_skip,
    })
}

/// A transfer's record as the settings that would make it again (a painted mask comes back
/// as `painted`; its pixels are the job's, see [`Item::mask_url`]).
fn settings_of(r: &Record, catalog: &Catalog) -> Option<JobSettings> {
    let d = r.ditail.as_ref()?;
    let source = variant_of(r.source.as_ref()?, catalog)?;
    let target = variant_of(&r.model, catalog)?;
    // A painted mask's record holds its file; the page restores it from `mask_url`.
    let mask = match d.mask.as_str() {
        m @ ("full" | "left" | "right" | "top" | "bottom") => m.to_string(),
        _ => "painted".to_string(),
    };
    Some(JobSettings {
        mode: Mode::Transfer,
        source: Some(source),
        targets: vec![target],
        prompt: r.prompt.clone(),
        negative_prompt: r.negative_prompt.clone(),
        inv_prompt: Some(d.inv_prompt.clone()).filter(|p| *p != r.prompt),
        inv_negative_prompt: Some(d.inv_negative_prompt.clone())
            .filter(|p| *p != r.negative_prompt),
        alpha: d.alpha,
        beta: d.beta,
        omega: d.omega,
        inv_steps: d.inv_steps,
        steps: d.steps,
        conv_ratio: d.conv_ratio,
        attn_ratio: d.attn_ratio,
        mask,
        size: d.size,
        ..JobSettings::default()
    })
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn only_plain_png_names_are_served() {
        assert!(valid_name("j1-0-0.png"));
        for bad in [
            "../x.png",
            "a/b.png",
            ".hidden.png",
            "x.jpg",
            "a\\b.png",
            "x.png\0",
            "",
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}

//! Which images are evaluated together: results with their content images (by file name)
//! and with their prompts (a prompts file, or what the caller read from ditail's metadata).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{EvalError, Result};

/// Image files the evaluation reads (by extension, any case).
const EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];

/// One result to score.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// Its name in reports (the file name).
    pub name: String,
    /// The result image.
    pub result: PathBuf,
    /// The content image it was made from, for the structure distance.
    pub content: Option<PathBuf>,
    /// The prompt it should follow, for the CLIP score.
    pub prompt: Option<String>,
}

/// The image files directly in `dir`, sorted by name. Fails when `dir` is no folder or
/// holds no image.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let err = |reason: String| EvalError::Input {
        path: dir.to_path_buf(),
        reason,
    };
    let entries =
        std::fs::read_dir(dir).map_err(|e| err(format!("cannot list the folder: {e}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| err(format!("cannot list the folder: {e}")))?
            .path();
        let is_image = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
        if is_image && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(err(format!(
            "no images in the folder (looked for .{})",
            EXTENSIONS.join(", .")
        )));
    }
    Ok(files)
}

/// A file's name without its extension: what pairs a result with its content image and
/// its line of a prompts file.
pub fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The items of `results`, without content or prompts yet.
pub fn items(results: &[PathBuf]) -> Vec<Item> {
    results
        .iter()
        .map(|p| Item {
            name: p
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            result: p.clone(),
            content: None,
            prompt: None,
        })
        .collect()
}

/// Gives every item the image of `content` with the same name (extension aside). Fails,
/// listing them, when some result has none, or when a name is ambiguous.
pub fn pair_content(items: &mut [Item], content: &[PathBuf]) -> Result<()> {
    let mut by_stem: BTreeMap<String, Vec<&PathBuf>> = BTreeMap::new();
    for p in content {
        by_stem.entry(stem(p)).or_default().push(p);
    }
    let mut unmatched = Vec::new();
    for item in items.iter_mut() {
        match by_stem.get(&stem(&item.result)).map(Vec::as_slice) {
            Some([one]) => item.content = Some((*one).clone()),
            Some(many) => {
                return Err(EvalError::Pairing(format!(
                    "result {} matches {} content images: {}",
                    item.name,
                    many.len(),
                    many.iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            None => unmatched.push(item.name.clone()),
        }
    }
    if !unmatched.is_empty() {
        return Err(EvalError::Pairing(format!(
            "{} result(s) have no content image of the same name: {}",
            unmatched.len(),
            list(&unmatched)
        )));
    }
    Ok(())
}

fn list(names: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut s = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s += &format!(" and {} more", names.len() - SHOWN);
    }
    s
}

/// Reads a prompts file: `name<TAB>prompt` lines (name with or without its extension;
/// blank lines and lines starting with `#` skipped), or a JSON object `{name: prompt}`.
pub fn read_prompts(path: &Path) -> Result<BTreeMap<String, String>> {
    let err = |reason: String| EvalError::Input {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    if text.trim_start().starts_with('{') {
        let map: BTreeMap<String, String> = serde_json::from_str(text)
            .map_err(|e| err(format!("not a JSON object of name -> prompt: {e}")))?;
        return Ok(map.into_iter().map(|(k, v)| (key(&k), v)).collect());
    }
    let mut prompts = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, prompt)) = line.split_once('\t') else {
            return Err(err(format!(
                "line {}: expected `name<TAB>prompt`, found {line:?}",
                i + 1
            )));
        };
        if prompts
            .insert(key(name.trim()), prompt.to_string())
            .is_some()
        {
            return Err(err(format!(
                "line {}: `{}` is listed twice",
                i + 1,
                name.trim()
            )));
        }
    }
    if prompts.is_empty() {
        return Err(err("no prompts in the file".into()));
    }
    Ok(prompts)
}

/// A prompts-file name as a key: without an image extension.
fn key(name: &str) -> String {
    let p = Path::new(name);
    let has_image_ext = p
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
    if has_image_ext {
        stem(p)
    } else {
        name.to_string()
    }
}

/// Gives every item its prompt from `prompts` (keyed by name without extension). Fails,
/// listing them, when some result has none.
pub fn pair_prompts(items: &mut [Item], prompts: &BTreeMap<String, String>) -> Result<()> {
    let mut unmatched = Vec::new();
    for item in items.iter_mut() {
        match prompts.get(&stem(&item.result)) {
            Some(p) => item.prompt = Some(p.clone()),
            None => unmatched.push(item.name.clone()),
        }
    }
    if unmatched.is_empty() {
        Ok(())
    } else {
        Err(EvalError::Pairing(format!(
            "{} result(s) have no prompt: {}",
            unmatched.len(),
            list(&unmatched)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_files_read_both_forms() {
        let dir = std::env::temp_dir().join(format!("ditail-eval-prompts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tsv = dir.join("p.txt");
        std::fs::write(&tsv, "\u{feff}# comment\na.png\ta cat, oil\r\nb\ta dog\n").unwrap();
        let p = read_prompts(&tsv).unwrap();
        assert_eq!(p["a"], "a cat, oil");
        assert_eq!(p["b"], "a dog");
        let json = dir.join("p.json");
        std::fs::write(&json, r#"{"a.jpg": "x"}"#).unwrap();
        assert_eq!(read_prompts(&json).unwrap()["a"], "x");
        std::fs::write(&tsv, "a\tx\na\ty\n").unwrap();
        assert!(
            read_prompts(&tsv)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        std::fs::write(&tsv, "no tab here\n").unwrap();
        assert!(
            read_prompts(&tsv)
                .unwrap_err()
                .to_string()
                .contains("line 1")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unmatched_results_are_named() {
        let mut items = items(&[PathBuf::from("r/a.png"), PathBuf::from("r/zz.png")]);
        let err = pair_content(&mut items, &[PathBuf::from("c/a.jpg")]).unwrap_err();
        assert!(err.to_string().contains("zz.png"), "{err}");
    }
}

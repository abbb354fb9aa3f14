//! Batch manifests: CSV with a header row, or JSON Lines (one object per line). Each row is
//! one transfer; empty or absent fields take the command line's values.
//!
//! Fields: `id`, `image` (else the content is generated from `prompt` by the source model
//! with `seed`), `prompt`, `negative_prompt`, `inv_prompt`, `inv_negative_prompt`,
//! `source`, `target`, `lora` (`FILE[:SCALE]`, several separated by `;`), `vae`,
//! `clip_skip`, `alpha`, `beta`, `omega`, `inv_steps`, `steps`, `conv_ratio`, `attn_ratio`,
//! `mask`, `no_injection`, `sites`, `size`, `seed`, `output` (file name in the output folder,
//! default `<id>.png`, id default `row-<n>` with n the 1-based row number). Relative paths
//! are looked up beside the manifest first.
//!
//! Ids and output names must be plain file names, so that every output lands in the output
//! folder: not blank, not `.` or `..`, without `/`, `\`, `:` (a Windows drive or stream)
//! or control characters; ids and output names are unique within a manifest. A manifest
//! that breaks this is refused as a whole, before anything is written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{Context, Result, refuse};

/// The fields a row may have.
pub const FIELDS: [&str; 25] = [
    "id",
    "image",
    "prompt",
    "negative_prompt",
    "inv_prompt",
    "inv_negative_prompt",
    "source",
    "target",
    "lora",
    "vae",
    "clip_skip",
    "alpha",
    "beta",
    "omega",
    "inv_steps",
    "steps",
    "conv_ratio",
    "attn_ratio",
    "mask",
    "no_injection",
    "sites",
    "size",
    "seed",
    "output",
    "comment",
];

/// One row: its 1-based number in the manifest and its non-empty fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Its 1-based number among the manifest's rows.
    pub number: usize,
    /// Its non-empty fields by name.
    pub fields: BTreeMap<String, String>,
}

fn field_name(raw: &str, path: &Path, line: usize) -> Result<String> {
    let name = raw.trim().to_ascii_lowercase().replace('-', "_");
    if !FIELDS.contains(&name.as_str()) {
        refuse!(
            "{}:{line}: unknown field `{raw}` (known: {})",
            path.display(),
            FIELDS.join(", ")
        );
    }
    Ok(name)
}

/// Reads a manifest; fails on the first malformed line or unknown field, naming it, and
/// on ids or output names that are not plain, unique file names (see [`check_names`]).
pub fn read(path: &Path) -> Result<Vec<Row>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let rows = match ext.as_deref() {
        Some("csv") => read_csv(path)?,
        Some("jsonl" | "ndjson") => read_jsonl(path)?,
        _ => refuse!(
            "manifest {}: the file name must end in .csv or .jsonl",
            path.display()
        ),
    };
    check_names(path, &rows)?;
    Ok(rows)
}

/// Why `name` is not a plain file name in the output folder, if it is not.
fn unsafe_name(name: &str) -> Option<&'static str> {
    if name.trim().is_empty() {
        Some("it is empty")
    } else if name == "." || name == ".." {
        Some("it names a folder")
    } else if name.contains(['/', '\\']) {
        Some("it contains a path separator (`/` or `\\`)")
    } else if name.contains(':') {
        Some("it contains `:` (a drive or stream name on Windows)")
    } else if name.chars().any(char::is_control) {
        Some("it contains a control character")
    } else if name.contains(['<', '>', '"', '|', '?', '*']) {
        Some("it contains a character Windows refuses in file names (`<>\"|?*`)")
    } else if name.ends_with(['.', ' ']) {
        Some("it ends with `.` or a space (Windows drops them, so it would name another file)")
    } else if windows_device(name) {
        Some("it is a device name on Windows (CON, PRN, AUX, NUL, COM1-9, LPT1-9)")
    } else {
        None
    }
}

/// Whether Windows reads `name` as a device rather than a file: the reserved stems, in
/// any case, alone or with an extension (`nul.png` is the null device too), see
/// <https://learn.microsoft.com/en-us/windows/win32/fileio/naming-a-file>.
fn windows_device(name: &str) -> bool {
    let stem = name
        .split('.')
        .next()
        .unwrap_or(name)
        .trim_end()
        .to_ascii_uppercase();
    match stem.as_str() {
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$" => true,
        _ => {
            let digit = stem
                .strip_prefix("COM")
                .or_else(|| stem.strip_prefix("LPT"));
            digit.is_some_and(|d| {
                matches!(
                    d,
                    "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9" | "¹" | "²" | "³"
                )
            })
        }
    }
}

/// Fails, naming the row and the value, unless every row's id and output name is a plain
/// file name (so its output lands in the output folder) and no two rows share an id or an
/// output name.
pub fn check_names(path: &Path, rows: &[Row]) -> Result<()> {
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    let mut outputs: BTreeMap<String, usize> = BTreeMap::new();
    for row in rows {
        let (id, output) = (row.id(), row.output_name());
        for (what, value) in [("id", &id), ("output", &output)] {
            if let Some(why) = unsafe_name(value) {
                refuse!(
                    "manifest {} row {}: {what} {value:?} is not a plain file name in the output \
                     folder: {why}",
                    path.display(),
                    row.number
                );
            }
        }
        if let Some(first) = ids.insert(id.clone(), row.number) {
            refuse!(
                "manifest {}: rows {first} and {} both have the id {id:?}",
                path.display(),
                row.number
            );
        }
        // Case-insensitive: on Windows' and macOS' default file systems `A.png` and
        // `a.png` are one file, so the second row would overwrite the first.
        if let Some(first) = outputs.insert(output.to_lowercase(), row.number) {
            refuse!(
                "manifest {}: rows {first} and {} both write {output:?}",
                path.display(),
                row.number
            );
        }
    }
    Ok(())
}

fn read_csv(path: &Path) -> Result<Vec<Row>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_path(path)
        .with_context(|| format!("manifest {}", path.display()))?;
    let header = reader
        .headers()
        .with_context(|| format!("manifest {}: header row", path.display()))?
        .clone();
    let names: Vec<String> = header
        .iter()
        .map(|h| field_name(h, path, 1))
        .collect::<Result<_>>()?;
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("manifest {}", path.display()))?;
        let fields = names
            .iter()
            .zip(record.iter())
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        rows.push(Row {
            number: i + 1,
            fields,
        });
    }
    Ok(rows)
}

fn read_jsonl(path: &Path) -> Result<Vec<Row>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read manifest {}", path.display()))?;
    // A byte-order mark, as Windows editors write, is no part of the first object.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not valid JSON", path.display(), i + 1))?;
        let serde_json::Value::Object(map) = value else {
            refuse!("{}:{}: expected a JSON object", path.display(), i + 1);
        };
        let mut fields = BTreeMap::new();
        for (k, v) in map {
            let name = field_name(&k, path, i + 1)?;
            let text = match v {
                serde_json::Value::Null => continue,
                serde_json::Value::String(s) if s.is_empty() => continue,
                serde_json::Value::String(s) => s,
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                    .collect::<Vec<_>>()
                    .join(";"),
                other => other.to_string(),
            };
            fields.insert(name, text);
        }
        rows.push(Row {
            number: rows.len() + 1,
            fields,
        });
    }
    Ok(rows)
}

/// `I/N`: this job's shard (0-based I).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This shard, from 0.
    pub index: usize,
    /// How many shards the rows are split into.
    pub count: usize,
}

impl Shard {
    /// Parses `I/N` with `0 <= I < N`.
    pub fn parse(s: &str) -> Result<Self> {
        let parsed = s
            .split_once('/')
            .and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
        match parsed {
            Some((index, count)) if count > 0 && index < count => Ok(Self { index, count }),
            _ => refuse!("--shard {s}: expected I/N with 0 <= I < N, e.g. 0/4"),
        }
    }
}

/// What a row costs and shares, for [`partition`].
#[derive(Clone, Debug, PartialEq)]
pub struct Work {
    /// The models it loads (rows with the same run together: each shard loads few).
    pub models: String,
    /// What its inversion is made of (content, source, inversion settings): rows with the
    /// same share one inversion in one process, so they stay in one shard.
    pub inversion: String,
    /// The inversion's cost (once per group), in any unit common to all rows.
    pub inversion_cost: f64,
    /// The row's own cost (its sampling).
    pub cost: f64,
}

/// Which shard of `count` runs each row (by index into `work`), balanced by work rather
/// than row count: rows that share an inversion form a group (a cocktail's targets of one
/// content and source), groups are ordered by the models of their first row (then by that
/// row), and the groups in that order fill the shards one after
/// another, each group going to the shard its middle falls in on the line of cumulative
/// cost, so every shard's expected work is within half a group of an even share. Every task
/// computes the same answer from the manifest alone.
pub fn partition(work: &[Work], count: usize) -> Vec<usize> {
    let count = count.max(1);
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, w) in work.iter().enumerate() {
        groups.entry(&w.inversion).or_default().push(i);
    }
    // A cost from a manifest may be anything: negative, NaN or huge counts as little.
    let sane = |x: f64| {
        if x.is_finite() && x > 0.0 {
            x.min(1e12)
        } else {
            0.0
        }
    };
    let mut groups: Vec<(f64, Vec<usize>)> = groups
        .into_values()
        .map(|rows| {
            let cost = sane(work[rows[0]].inversion_cost)
                + rows.iter().map(|&i| sane(work[i].cost)).sum::<f64>();
            (cost.max(1e-9), rows)
        })
        .collect();
    groups.sort_by(|a, b| {
        let (a, b) = (a.1[0], b.1[0]);
        work[a].models.cmp(&work[b].models).then(a.cmp(&b))
    });
    let total: f64 = groups.iter().map(|g| g.0).sum();
    let share = total / count as f64;
    let mut owner = vec![0; work.len()];
    let mut done = 0.0;
    for (cost, rows) in groups {
        let shard = (((done + cost / 2.0) / share) as usize).min(count - 1);
        for i in rows {
            owner[i] = shard;
        }
        done += cost;
    }
    owner
}

impl Row {
    /// A field's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// A parsed field, or `default` when absent.
    pub fn parse<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                crate::AppError::Invalid(format!("field `{name}`: cannot read `{v}`"))
            }),
        }
    }

    /// A boolean field (`true/false`, `1/0`, `yes/no`).
    pub fn flag(&self, name: &str, default: bool) -> Result<bool> {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            Some(v) => refuse!("field `{name}`: `{v}` is not true or false"),
        }
    }

    /// The row's id (`id`, else `row-<n>`).
    pub fn id(&self) -> String {
        self.get("id")
            .map_or_else(|| format!("row-{:05}", self.number), str::to_string)
    }

    /// The output file name.
    pub fn output_name(&self) -> String {
        self.get("output")
            .map_or_else(|| format!("{}.png", self.id()), str::to_string)
    }
}

/// A path from the manifest: beside the manifest if it exists there, else as written (a
/// path relative to the working folder, or a hub id).
pub fn resolve(manifest: &Path, value: &str) -> String {
    let p = Path::new(value);
    if p.is_relative() {
        let beside: PathBuf = manifest.parent().unwrap_or(Path::new(".")).join(p);
        if beside.exists() {
            return beside.display().to_string();
        }
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(models: &str, inversion: &str, cost: f64) -> Work {
        Work {
            models: models.into(),
            inversion: inversion.into(),
            inversion_cost: cost,
            cost,
        }
    }

    #[test]
    fn shards_share_the_work_evenly_and_keep_shared_inversions_together() {
        assert!(Shard::parse("4/4").is_err() && Shard::parse("1").is_err());
        assert_eq!(Shard::parse("2/5").unwrap(), Shard { index: 2, count: 5 });
        // Equal rows: consecutive runs of even size.
        let even: Vec<Work> = (0..12).map(|i| work("a>b", &i.to_string(), 1.0)).collect();
        assert_eq!(partition(&even, 4), [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]);
        // A cocktail of 3 models over 2 contents: each content's inversion by one source is
        // shared by its 3 targets, which stay on one shard; big rows (1024 px: 4x) count
        // for their work, so the shards' sums are even.
        let mut rows = Vec::new();
        for content in ["c1", "c2"] {
            for s in ["a", "b", "c"] {
                for t in ["a", "b", "c"] {
                    let cost = if t == "c" { 4.0 } else { 1.0 };
                    rows.push(Work {
                        models: format!("{s}>{t}"),
                        inversion: format!("{content}|{s}"),
                        inversion_cost: 1.0,
                        cost,
                    });
                }
            }
        }
        for count in 1..=5 {
            let owner = partition(&rows, count);
            assert!(owner.iter().all(|&s| s < count));
            let mut sums = vec![0.0; count];
            let mut seen = BTreeMap::new();
            for (w, &s) in rows.iter().zip(&owner) {
                sums[s] += w.cost;
                let first = *seen.entry(&w.inversion).or_insert(s);
                assert_eq!(first, s, "an inversion group split across shards");
            }
            let share = sums.iter().sum::<f64>() / count as f64;
            let biggest_group = 1.0 + 1.0 + 1.0 + 4.0;
            assert!(
                sums.iter()
                    .all(|&x| (x - share).abs() <= biggest_group + 1.0),
                "{count} shards: {sums:?}"
            );
        }
        // Every row has one shard; the same manifest gives the same answer.
        assert_eq!(partition(&rows, 3), partition(&rows, 3));
    }

    #[test]
    fn names_windows_cannot_write_are_refused() {
        for bad in [
            "CON",
            "nul",
            "Nul.png",
            "com1",
            "LPT9.txt",
            "aux.tar.gz",
            "COM¹",
            "a?",
            "x*y",
            "a<b",
            "q\"",
            "pipe|",
            "dot.",
            "space ",
        ] {
            assert!(unsafe_name(bad).is_some(), "{bad:?} accepted");
        }
        for good in [
            "console",
            "nullable.png",
            "com10",
            "lpt",
            "COM0",
            "row-1",
            "a.b.png",
            "éé",
            "中文",
        ] {
            assert_eq!(unsafe_name(good), None, "{good:?} refused");
        }
    }
}

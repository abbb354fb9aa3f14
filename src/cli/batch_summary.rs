//! What a batch task did, written beside its outputs when it ends however it ends (shard I
//! of N > 1: `batch-summary-I-of-N.json`; with `--summary`, a whole run's
//! `batch-summary.json`), and
//! `ditail batch --status`, which reads the manifest, the outputs and every shard's summary
//! and says which rows are done, which failed (with the reason their task gave) and which
//! are missing (never run, or their task was killed before it could say).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::out::outln;
use super::ui::Ui;
use ditail::app::manifest::{self, Shard};

/// One task's account of its shard.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    /// The manifest it ran.
    pub manifest: PathBuf,
    /// Its shard, `I/N`, and how it was chosen.
    pub shard: String,
    pub shard_reason: String,
    /// Rows it wrote.
    pub done: Vec<String>,
    /// Rows already complete when it came to them.
    pub skipped: Vec<String>,
    /// Rows another process was writing.
    pub busy: Vec<String>,
    /// Rows that failed, with why.
    pub failed: BTreeMap<String, String>,
    /// Rows it did not get to (interrupted).
    pub not_run: Vec<String>,
    /// Whether it was interrupted.
    pub interrupted: bool,
    /// When it ended (seconds since the Unix epoch).
    pub ended_unix: u64,
}

/// The summary's file name for a shard.
pub fn file_name(shard: Shard) -> String {
    if shard.count > 1 {
        format!("batch-summary-{}-of-{}.json", shard.index, shard.count)
    } else {
        "batch-summary.json".to_string()
    }
}

impl Summary {
    /// Writes it (atomically) into `output`.
    pub fn write(&mut self, output: &Path, shard: Shard, ui: &Ui) -> Result<()> {
        self.ended_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        super::eval::write_json(&output.join(file_name(shard)), self, ui)
    }
}

/// `ditail batch MANIFEST -o OUT --status`: every row's state; fails (exit 1) unless every
/// row is done.
pub fn status(manifest_path: &Path, output: &Path, complete: &dyn Fn(&Path) -> bool) -> Result<()> {
    let rows = manifest::read(manifest_path)?;
    let mut summaries: Vec<(String, Summary)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir(output) {
        let mut names: Vec<String> = dir
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("batch-summary") && n.ends_with(".json"))
            .collect();
        names.sort();
        for n in names {
            let text = std::fs::read_to_string(output.join(&n))
                .with_context(|| format!("reading {}", output.join(&n).display()))?;
            match serde_json::from_str::<Summary>(&text) {
                Ok(s) => summaries.push((n, s)),
                Err(e) => eprintln!("warning: {n} is not a batch summary ({e}); left out"),
            }
        }
    }
    let (mut done, mut failed, mut missing) = (Vec::new(), Vec::new(), Vec::new());
    for row in &rows {
        let id = row.id();
        if complete(&output.join(row.output_name())) {
            done.push(id);
        } else if let Some((file, reason)) = summaries
            .iter()
            .rev()
            .find_map(|(f, s)| s.failed.get(&id).map(|r| (f, r)))
        {
            failed.push(format!("{id}: {reason} ({file})"));
        } else {
            missing.push(id);
        }
    }
    outln!(
        "{}: {} rows: {} done, {} failed, {} missing ({} shard summaries in {})",
        manifest_path.display(),
        rows.len(),
        done.len(),
        failed.len(),
        missing.len(),
        summaries.len(),
        output.display()
    );
    for f in &failed {
        outln!("  failed {f}");
    }
    if !missing.is_empty() {
        outln!(
            "  missing (never run, or their task ended before it could say): {}",
            missing.join(", ")
        );
    }
    if !failed.is_empty() || !missing.is_empty() {
        bail!(
            "{} of {} rows are not done: rerun the batch (done rows are skipped)",
            failed.len() + missing.len(),
            rows.len()
        );
    }
    Ok(())
}

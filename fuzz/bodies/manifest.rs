//! Batch manifests (`ditail batch`): the input as a `.csv` and as a `.jsonl` manifest
//! through `manifest::read`, every field of every row through the accessors `batch` uses,
//! and `--shard` values. An accepted manifest's ids and output names must each be one plain
//! file name, so that every output lands in the output folder.

use std::path::{Component, Path};

use ditail::app::manifest::{self, FIELDS, Shard, Work};

/// Whether `name` joined to a folder names a file directly in it.
fn plain_file_name(name: &str) -> bool {
    let mut parts = Path::new(name).components();
    matches!(
        (parts.next(), parts.next()),
        (Some(Component::Normal(n)), None) if n == name
    )
}

pub fn run(data: &[u8]) {
    for name in ["manifest.csv", "manifest.jsonl"] {
        let path = super::input_file(name, data);
        let Ok(rows) = manifest::read(&path) else {
            continue;
        };
        for row in &rows {
            let (id, output) = (row.id(), row.output_name());
            assert!(plain_file_name(&id), "row {}: id {id:?}", row.number);
            assert!(
                plain_file_name(&output),
                "row {}: output {output:?}",
                row.number
            );
            for field in FIELDS {
                if let Some(value) = row.get(field) {
                    let _ = manifest::resolve(&path, value);
                }
            }
            let _ = row.parse::<f64>("alpha", 2.0);
            let _ = row.parse::<usize>("steps", 50);
            let _ = row.parse::<u32>("size", 512);
            let _ = row.parse::<u64>("seed", 0);
            let _ = row.parse::<usize>("clip_skip", 1);
            let _ = row.flag("no_injection", false);
        }
    }
    if let Ok(shard) = Shard::parse(&String::from_utf8_lossy(data)) {
        // Any costs, even ones no manifest would give: every row gets a shard in range.
        let work: Vec<Work> = [0.0, -1.0, f64::NAN, f64::INFINITY, 1e300]
            .iter()
            .enumerate()
            .map(|(i, &cost)| Work {
                models: format!("m{}", i % 2),
                inversion: format!("i{}", i % 3),
                inversion_cost: cost,
                cost,
            })
            .collect();
        let owner = manifest::partition(&work, shard.count);
        assert!(owner.len() == work.len() && owner.iter().all(|&s| s < shard.count));
    }
}

//! pytorch-fid's InceptionV3 with weights from a counter hash, as
//! `scripts/make_eval_fixtures.py` makes them: every element `i` of tensor `name` is
//! `lo + (hi - lo) * u` with `u = (splitmix64(fnv1a64(name) + i) >> 40) / 2^24`, the range
//! by the tensor's role (He-uniform convolutions, BatchNorm near identity). The full-size
//! network is then checkable against pytorch-fid without committing 92 MB of weights.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::TensorData;
use ditail::models::tensor_file::write_tensors;
use serde_json::Value;

fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

fn splitmix64(x: u64) -> u64 {
    let x = x.wrapping_add(0x9E3779B97F4A7C15);
    let z = (x ^ (x >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^ (z >> 31)
}

pub fn hash_tensor(name: &str, shape: &[usize]) -> TensorData {
    let n: usize = shape.iter().product();
    let (lo, hi) = if name.ends_with(".conv.weight") {
        let a = (6.0 / (shape[1] * shape[2] * shape[3]) as f64).sqrt();
        (-a, a)
    } else if name.ends_with(".bn.weight") || name.ends_with(".bn.running_var") {
        (0.9, 1.1)
    } else if name.ends_with(".bn.bias") || name.ends_with(".bn.running_mean") {
        (-0.1, 0.1)
    } else if name.starts_with("fc.") {
        (-0.01, 0.01)
    } else {
        panic!("no rule for {name}")
    };
    let seed = fnv1a64(name);
    let values: Vec<f32> = (0..n as u64)
        .map(|i| {
            let u = (splitmix64(seed.wrapping_add(i)) >> 40) as f64 / (1u64 << 24) as f64;
            (lo + (hi - lo) * u) as f32
        })
        .collect();
    TensorData::new(values, shape.to_vec())
}

/// Writes the hash-weight InceptionV3 to `path` (the tensors listed in
/// `tests/fixtures/eval/inception-tensors.json`).
pub fn write_hash_inception(path: &Path) {
    let list = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/eval/inception-tensors.json");
    let list: Value = serde_json::from_slice(&std::fs::read(list).unwrap()).unwrap();
    let entries = list
        .as_array()
        .or_else(|| list["tensors"].as_array())
        .expect("a list");
    let mut tensors = BTreeMap::new();
    for e in entries {
        let name = e[0].as_str().unwrap();
        let shape: Vec<usize> = e[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        tensors.insert(name.to_string(), hash_tensor(name, &shape));
    }
    write_tensors(path, &tensors, None).unwrap();
}

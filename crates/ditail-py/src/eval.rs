//! `ditail.evaluate`: the paper's metrics over a folder of results, through the application
//! layer's evaluation (the same pairing, checks and scores as `ditail eval`), returned as
//! the report `ditail eval --json` writes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ditail_app::eval::{EvalInputs, EvalOptions, EvalSink, Evaluation, Prompts};
use ditail_eval::Stage;
use ditail_models::device::Compute;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use crate::model::parse_compute;
use crate::progress::Bridge;

/// The bridge as the evaluation's sink: a stage per metric, its images as steps.
struct Sink<'a> {
    bridge: &'a mut Bridge,
    warnings: Vec<String>,
}

impl EvalSink for Sink<'_> {
    fn loading(&mut self, _: &str) {}

    fn progress(&mut self, stage: Stage, done: usize, total: usize) -> bool {
        let name = match stage {
            Stage::Clip => "clip score",
            Stage::Structure => "structure distance",
            Stage::FidResults => "fid results",
            Stage::FidReference => "fid reference",
        };
        self.bridge.report(name, done, total, None)
    }

    fn warn(&mut self, message: &str) {
        self.warnings.push(message.to_string());
    }
}

/// Scores a folder of results (see the package's `ditail.evaluate`); returns the report
/// as JSON and the warnings.
#[pyfunction]
#[pyo3(signature = (results, content, prompts, reference, inception, fid_native, clip, dino,
                    batch, dino_antialias, backend, dtype, device, callback=None))]
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    py: Python<'_>,
    results: PathBuf,
    content: Option<PathBuf>,
    prompts: &Bound<'_, PyAny>,
    reference: Option<PathBuf>,
    inception: Option<PathBuf>,
    fid_native: bool,
    clip: String,
    dino: String,
    batch: u32,
    dino_antialias: bool,
    backend: Option<String>,
    dtype: Option<String>,
    device: Option<usize>,
    callback: Option<Py<PyAny>>,
) -> PyResult<(String, Vec<String>)> {
    let prompts = if prompts.is_none() {
        Prompts::None
    } else if let Ok(flag) = prompts.extract::<bool>() {
        if flag {
            Prompts::Metadata
        } else {
            Prompts::None
        }
    } else if let Ok(map) = prompts.extract::<BTreeMap<String, String>>() {
        Prompts::Map(map)
    } else if let Ok(path) = prompts.extract::<PathBuf>() {
        Prompts::File(path)
    } else {
        return Err(PyTypeError::new_err(
            "prompts is a file, a dict {result name: prompt}, True (from the metadata) or None",
        ));
    };
    let inputs = EvalInputs {
        results,
        content,
        prompts,
        reference,
        inception,
        fid_native,
    };
    let nets = EvalOptions {
        clip,
        dino,
        eval_batch: batch,
        dino_antialias,
    };
    let (backend, dtype) = parse_compute(py, backend, dtype)?;
    let mut bridge = Bridge::new(callback, false);
    let mut warnings = Vec::new();
    let result = py.detach(|| {
        let evaluation = Evaluation::plan(&inputs, &nets)?;
        let compute = Compute::select_device(backend, dtype, device)?;
        let mut sink = Sink {
            bridge: &mut bridge,
            warnings: Vec::new(),
        };
        let report = evaluation.run(&compute, &mut sink)?;
        warnings = sink.warnings;
        Ok(serde_json::to_string(&report)?)
    });
    let json = bridge.finish(result)?;
    Ok((json, warnings))
}

//! `ditail.load`: a checkpoint loaded on a device (the command line's choice of backend,
//! device and float type), its LoRAs merged, as a [`Model`] that any number of calls share.

use std::path::PathBuf;
use std::sync::Arc;

use burn::tensor::FloatDType;
use ditail_app::{Context, ModelOptions};
use ditail_models::LoadOptions;
use ditail_models::device::{Backend, Compute, cuda_works, wgpu_adapters};
use ditail_pipeline::ModelSpec;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::{IntoPy, invalid};

/// A loaded checkpoint: its networks, tokenizer and schedule on one device. Read-only once
/// loaded: any number of threads may use one model (the GIL is released while it runs).
#[pyclass(frozen, module = "ditail._native")]
pub struct Model {
    pub(crate) model: Arc<ditail_pipeline::Model>,
    pub(crate) compute: Compute,
    pub(crate) spec: ModelSpec,
}

#[pymethods]
impl Model {
    /// What was loaded: the path or repo id given.
    #[getter]
    fn name(&self) -> &str {
        &self.spec.model
    }

    /// "sd1" or "sdxl".
    #[getter]
    fn family(&self) -> &'static str {
        match self.model.family() {
            ditail_models::Family::Sd1 => "sd1",
            ditail_models::Family::Sdxl => "sdxl",
        }
    }

    /// The family's native image size (512 for SD1.x, 1024 for SDXL): the default working
    /// size of a transfer into this model.
    #[getter]
    fn native_size(&self) -> u32 {
        self.model.family().native_size()
    }

    /// The backend it runs on: "cpu", "wgpu" or "cuda".
    #[getter]
    fn backend(&self) -> &'static str {
        self.compute.backend.name()
    }

    /// Its float type: "f32" or "f16".
    #[getter]
    fn dtype(&self) -> &'static str {
        dtype_name(self.compute.dtype)
    }

    /// The LoRAs merged into it, as `(path, scale)`.
    #[getter]
    fn loras(&self) -> Vec<(PathBuf, f32)> {
        self.spec
            .loras
            .iter()
            .map(|l| (l.path.clone(), l.scale))
            .collect()
    }

    fn __repr__(&self) -> String {
        format!(
            "<ditail.Model {} ({}, {} {})>",
            ditail_app::models::describe(&self.spec),
            self.family(),
            self.backend(),
            self.dtype()
        )
    }
}

fn dtype_name(dtype: FloatDType) -> &'static str {
    match dtype {
        FloatDType::F16 => "f16",
        FloatDType::BF16 => "bf16",
        _ => "f32",
    }
}

/// The backend and float type as Python names them (`None`: the automatic choice).
pub fn parse_compute(
    py: Python<'_>,
    backend: Option<String>,
    dtype: Option<String>,
) -> PyResult<(Option<Backend>, Option<FloatDType>)> {
    let backend = backend.map(|b| b.parse::<Backend>()).transpose().py()?;
    let dtype = match dtype.as_deref() {
        None => None,
        Some("f32" | "float32") => Some(FloatDType::F32),
        Some("f16" | "float16") => Some(FloatDType::F16),
        Some(other) => {
            return Err(invalid(
                py,
                &format!(
                    "dtype={other:?}: use \"f32\" or \"f16\" (None: f32 on the CPU, f16 on GPUs)"
                ),
            ));
        }
    };
    Ok((backend, dtype))
}

/// Loads a model (see the package's `ditail.load` for the arguments).
#[pyfunction]
#[pyo3(signature = (spec, loras, vae, clip_skip, embeddings, backend, dtype, device))]
#[allow(clippy::too_many_arguments)]
pub fn load(
    py: Python<'_>,
    spec: PathBuf,
    loras: Vec<String>,
    vae: Option<PathBuf>,
    clip_skip: u32,
    embeddings: Vec<PathBuf>,
    backend: Option<String>,
    dtype: Option<String>,
    device: Option<usize>,
) -> PyResult<Model> {
    let (backend, dtype) = parse_compute(py, backend, dtype)?;
    let options = ModelOptions {
        loras,
        vae: vae.map(|v| v.display().to_string()),
        clip_skip,
        embeddings,
    };
    let spec = options.spec(&spec.display().to_string(), true).py()?;
    py.detach(|| {
        let compute = Compute::select_device(backend, dtype, device)?;
        let model = ditail_pipeline::Model::load(
            &spec,
            &compute.device,
            LoadOptions {
                dtype: compute.dtype,
            },
        )
        .with_context(|| format!("loading model {}", spec.model))?;
        Ok::<_, ditail_app::AppError>(Model {
            model: Arc::new(model),
            compute,
            spec,
        })
    })
    .py()
}

/// The backends this build has and the devices each sees: a list of dicts with `backend`,
/// `name`, `kind` and `is_gpu` (the `ditail devices` command's list).
#[pyfunction]
pub fn devices(py: Python<'_>) -> PyResult<Vec<Bound<'_, PyDict>>> {
    let mut out = Vec::new();
    let mut add = |backend: &str, name: &str, kind: &str, is_gpu: bool| -> PyResult<()> {
        let d = PyDict::new(py);
        d.set_item("backend", backend)?;
        d.set_item("name", name)?;
        d.set_item("kind", kind)?;
        d.set_item("is_gpu", is_gpu)?;
        out.push(d);
        Ok(())
    };
    for backend in Backend::compiled() {
        match backend {
            Backend::Cpu => add("cpu", "CPU", "cpu", false)?,
            Backend::Cuda => {
                if py.detach(cuda_works) {
                    add("cuda", "CUDA device 0", "gpu", true)?;
                }
            }
            Backend::Wgpu => {
                for a in py.detach(wgpu_adapters) {
                    add(
                        "wgpu",
                        &format!("{} ({})", a.name, a.api),
                        &a.kind,
                        a.is_gpu,
                    )?;
                }
            }
        }
    }
    Ok(out)
}

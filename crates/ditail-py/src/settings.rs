//! Settings as Python passes them (a dict of keyword arguments) into the application
//! layer's option structs, whose defaults and checks every face shares. A key this module
//! does not know, or a value of the wrong type, is a `TypeError` naming the key.

use ditail_app::eval::EvalOptions;
use ditail_app::options::DEFAULT_LORA_SCALE;
use ditail_app::{DitailOptions, GenerationOptions};
use ditail_pipeline::settings::{DEFAULT_NEGATIVE, MIN_SIZE, defaults as d};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::invalid;

/// The method's defaults, by the keyword argument that sets each: what `ditail`'s Python
/// functions put in their signatures.
#[pyfunction]
pub fn defaults(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let o = DitailOptions::default();
    let out = PyDict::new(py);
    out.set_item("negative_prompt", &o.negative_prompt)?;
    out.set_item("alpha", o.alpha)?;
    out.set_item("beta", o.beta)?;
    out.set_item("omega", o.omega)?;
    out.set_item("inv_steps", o.inv_steps)?;
    out.set_item("steps", o.steps)?;
    out.set_item("conv_ratio", o.conv_ratio)?;
    out.set_item("attn_ratio", o.attn_ratio)?;
    out.set_item("mask", &o.mask)?;
    out.set_item("generation_omega", d::GENERATION_OMEGA)?;
    // As written (0.7), not as the f32 widens (0.699999988).
    let lora_scale: f64 = DEFAULT_LORA_SCALE
        .to_string()
        .parse()
        .expect("a float's text");
    out.set_item("lora_scale", lora_scale)?;
    out.set_item("clip_skip", 1)?;
    out.set_item("min_size", MIN_SIZE)?;
    let eval = EvalOptions::default();
    out.set_item("eval_clip", &eval.clip)?;
    out.set_item("eval_dino", &eval.dino)?;
    out.set_item("eval_batch", eval.eval_batch)?;
    Ok(out)
}

/// Reads `key`'s value, naming the key when its type is wrong.
fn value<'py, T>(key: &str, v: &Bound<'py, PyAny>) -> PyResult<T>
where
    T: for<'a> FromPyObject<'a, 'py, Error = PyErr>,
{
    v.extract::<T>().map_err(|e| {
        let text = e.value(v.py()).to_string();
        if e.is_instance_of::<pyo3::exceptions::PyOverflowError>(v.py()) {
            invalid(v.py(), &format!("{key}={v}: out of range ({text})"))
        } else {
            PyTypeError::new_err(format!("{key}: {text}"))
        }
    })
}

/// Ditail's options with the keys of `kwargs` set (the rest at their defaults).
pub fn ditail_options(kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<DitailOptions> {
    let mut o = DitailOptions::default();
    for (k, v) in kwargs.into_iter().flat_map(|d| d.iter()) {
        let key: String = k.extract()?;
        if v.is_none()
            && !matches!(
                key.as_str(),
                "inv_prompt" | "inv_negative_prompt" | "sites" | "size"
            )
        {
            continue;
        }
        match key.as_str() {
            "negative_prompt" => o.negative_prompt = value(&key, &v)?,
            "inv_prompt" => o.inv_prompt = value(&key, &v)?,
            "inv_negative_prompt" => o.inv_negative_prompt = value(&key, &v)?,
            "alpha" => o.alpha = value(&key, &v)?,
            "beta" => o.beta = value(&key, &v)?,
            "omega" => o.omega = value(&key, &v)?,
            "inv_steps" => o.inv_steps = value(&key, &v)?,
            "steps" => o.steps = value(&key, &v)?,
            "conv_ratio" => o.conv_ratio = value(&key, &v)?,
            "attn_ratio" => o.attn_ratio = value(&key, &v)?,
            "mask" => o.mask = value::<std::path::PathBuf>(&key, &v)?.display().to_string(),
            "no_injection" => o.no_injection = value(&key, &v)?,
            "sites" => {
                o.sites = value::<Option<Vec<String>>>(&key, &v)?.map(|s| s.join(","));
            }
            "size" => o.size = Some(value(&key, &v)?),
            _ => return Err(PyTypeError::new_err(format!("unexpected setting {key:?}"))),
        }
    }
    Ok(o)
}

/// Text-to-image options with the keys of `kwargs` set, checked.
pub fn generation_options(kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<GenerationOptions> {
    let mut o = GenerationOptions {
        negative: DEFAULT_NEGATIVE.to_string(),
        omega: d::GENERATION_OMEGA,
        steps: d::STEPS,
        size: None,
    };
    for (k, v) in kwargs.into_iter().flat_map(|d| d.iter()) {
        let key: String = k.extract()?;
        if v.is_none() {
            continue;
        }
        match key.as_str() {
            "negative_prompt" => o.negative = value(&key, &v)?,
            "omega" => o.omega = value(&key, &v)?,
            "steps" => o.steps = value(&key, &v)?,
            "size" => o.size = Some(value(&key, &v)?),
            _ => return Err(PyTypeError::new_err(format!("unexpected setting {key:?}"))),
        }
    }
    Ok(o)
}

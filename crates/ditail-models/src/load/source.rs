//! What the model asks a file for: a [`Source`] names (part of) a file tensor, how to
//! shape it and the LoRA updates to add, and converts it to the model's float type when
//! burn-store asks, checking every value; the first failure of a load is kept in its
//! [`Fault`].

use std::ops::Range;
use std::sync::{Arc, Mutex};

use burn::tensor::{Bytes, DType, FloatDType};
use burn_store::burn_pack::{Error as PackError, Tensor as PackTensor};

use super::lora_term::LoraTerm;
use super::safetensors::{
    DAMAGED, TensorEntry, WeightFile, check_float, decode_f32_checked, non_finite,
};
use crate::error::{ModelError, Result};

/// Converts to `target`; fails, handing the values back, when one does not fit the target
/// (finite in f32, beyond f16's range), checked in the conversion's own pass.
fn encode(values: Vec<f32>, target: FloatDType) -> std::result::Result<Bytes, Vec<f32>> {
    /// Half-precision bits, or the values back when one became infinite.
    fn narrow(
        values: Vec<f32>,
        bits: impl Fn(f32) -> (u16, bool),
    ) -> std::result::Result<Bytes, Vec<f32>> {
        let mut finite = true;
        let out: Vec<u16> = values
            .iter()
            .map(|&v| {
                let (b, ok) = bits(v);
                finite &= ok;
                b
            })
            .collect();
        if finite {
            Ok(Bytes::from_elems(out))
        } else {
            Err(values)
        }
    }
    match target {
        FloatDType::F16 => narrow(values, |v| {
            let h = half::f16::from_f32(v);
            (h.to_bits(), h.is_finite())
        }),
        FloatDType::BF16 => narrow(values, |v| {
            let h = half::bf16::from_f32(v);
            (h.to_bits(), h.is_finite())
        }),
        FloatDType::F64 => Ok(Bytes::from_elems(
            values.into_iter().map(f64::from).collect::<Vec<f64>>(),
        )),
        FloatDType::F32 | FloatDType::Flex32 => Ok(Bytes::from_elems(values)),
    }
}

/// A request for (part of) a file tensor under the name the model gives it.
#[derive(Clone, Debug)]
pub struct Source {
    /// The file holding the tensor.
    pub file: Arc<WeightFile>,
    /// Its header entry.
    pub entry: TensorEntry,
    /// A range of rows (first dimension) to take instead of the whole tensor.
    pub rows: Option<Range<usize>>,
    /// A shape to deliver the data in (same element count), e.g. a 1x1 convolution's
    /// weight as a linear one.
    pub reshape: Option<Vec<usize>>,
    /// Deliver the transpose of a 2-D tensor (OpenCLIP stores its text projection as
    /// `[in, out]`, used as `x @ P`; the model's linear takes `[out, in]`).
    pub transpose: bool,
    /// LoRA updates added to the tensor as it is converted.
    pub lora: Vec<LoraTerm>,
}

impl Source {
    /// The whole tensor.
    pub fn whole(file: &Arc<WeightFile>, entry: &TensorEntry) -> Self {
        Self {
            file: file.clone(),
            entry: entry.clone(),
            rows: None,
            reshape: None,
            transpose: false,
            lora: Vec::new(),
        }
    }

    /// The shape that will be delivered.
    pub fn shape(&self) -> Vec<usize> {
        if let Some(shape) = &self.reshape {
            return shape.clone();
        }
        let mut shape = self.entry.shape.clone();
        if let Some(r) = &self.rows {
            shape[0] = r.len();
        }
        if self.transpose && shape.len() == 2 {
            shape.swap(0, 1);
        }
        shape
    }

    /// A burn-store tensor named `name` whose bytes are read and converted to `target` only
    /// when the model asks for them. A NaN or infinite value (in the file, in a LoRA term,
    /// or made by converting to f16) fails the conversion; its typed error goes to `fault`,
    /// since burn-store passes on only a string.
    pub fn into_pack(self, name: String, target: FloatDType, fault: &Fault) -> Result<PackTensor> {
        let size = check_float(self.file.path(), &self.entry)?;
        let shape = self.shape();
        let numel: usize = shape.iter().product();
        let cols = self.entry.shape.iter().skip(1).product::<usize>();
        let dtype: DType = target.into();
        let byte_len = numel * dtype.size();
        let fault = fault.clone();
        let provider = move || {
            if fault.is_set() {
                return Err(PackError::ValidationError(
                    "not read: an earlier tensor failed".into(),
                ));
            }
            let raw = self.file.raw(&self.entry);
            let rows =
                (self.rows.clone()).unwrap_or(0..self.entry.shape.first().copied().unwrap_or(1));
            let raw = match &self.rows {
                Some(r) => raw
                    .get(r.start * cols * size..r.end * cols * size)
                    .ok_or_else(|| {
                        PackError::ValidationError(format!(
                            "rows {r:?} out of range for `{}`",
                            self.entry.name
                        ))
                    })?,
                None => raw,
            };
            let (mut values, finite) = decode_f32_checked(raw, self.entry.dtype);
            self.file.release(&self.entry);
            let first = rows.start * cols;
            let fail = |values: &[f32], bad: fn(f32) -> bool, why: &str| {
                fault.raise(non_finite(
                    self.file.path(),
                    &self.entry,
                    values,
                    first,
                    bad,
                    why,
                ))
            };
            if !finite {
                return Err(fail(&values, |v| !v.is_finite(), DAMAGED));
            }
            if self.transpose && self.entry.shape.len() == 2 {
                let (r, c) = (rows.len(), cols);
                values = (0..r * c).map(|i| values[(i % r) * c + i / r]).collect();
            }
            for term in &self.lora {
                term.apply(&mut values, rows.clone())
                    .map_err(|e| fault.raise(e))?;
            }
            // A sum of finite values overflows only when they are near f32's limit.
            if !self.lora.is_empty() && values.iter().any(|v| !v.is_finite()) {
                return Err(fail(
                    &values,
                    |v| !v.is_finite(),
                    "adding the LoRA update made it overflow",
                ));
            }
            encode(values, target).map_err(|values| {
                let overflows: fn(f32) -> bool = match target {
                    FloatDType::BF16 => |v| !half::bf16::from_f32(v).is_finite(),
                    _ => |v| !half::f16::from_f32(v).is_finite(),
                };
                fail(
                    &values,
                    overflows,
                    "a half-precision float cannot hold it (f16's largest is 65504): load \
                     the model in f32 (`--dtype f32`)",
                )
            })
        };
        Ok(PackTensor::deferred(
            name, dtype, shape, None, byte_len, provider,
        ))
    }
}

/// The first typed error met while converting tensors (burn-store, which asks for them,
/// passes on only a string); shared by one load's tensors, so that after the first failure
/// the rest are not read.
#[derive(Clone, Debug, Default)]
pub struct Fault(Arc<Mutex<Option<ModelError>>>);

impl Fault {
    fn is_set(&self) -> bool {
        self.0.lock().map_or(true, |f| f.is_some())
    }

    /// Keeps `e` (unless an earlier error is kept) and returns burn-store's error for it.
    fn raise(&self, e: ModelError) -> PackError {
        let message = e.to_string();
        if let Ok(mut slot) = self.0.lock() {
            slot.get_or_insert(e);
        }
        PackError::ValidationError(message)
    }

    /// The error kept, if any.
    pub fn take(&self) -> Option<ModelError> {
        self.0.lock().ok().and_then(|mut f| f.take())
    }
}

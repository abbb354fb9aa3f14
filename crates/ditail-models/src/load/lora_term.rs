//! One LoRA update of one weight, added to the weight's values as they are converted (a
//! [`super::Source`] carries the updates of its tensor; [`super::lora`] finds them).

use std::ops::Range;
use std::sync::Arc;

use super::safetensors::{DAMAGED, TensorEntry, WeightFile, decode_f32_checked, non_finite};
use crate::error::Result;

/// One low-rank update of one weight: `factor · up @ down`.
#[derive(Clone, Debug)]
pub struct LoraTerm {
    pub(super) file: Arc<WeightFile>,
    pub(super) down: TensorEntry,
    pub(super) up: TensorEntry,
    pub(super) factor: f32,
    /// The first row of the file tensor that the update's row 0 is (nonzero when the
    /// weight is a slice of a fused tensor, like OpenCLIP's q/k/v).
    pub(super) row_offset: usize,
}

impl LoraTerm {
    /// Fails, saying both shapes, unless this update has the size of a weight of `shape`
    /// (a LoRA trained on another SD1.x-named model of other widths would not).
    pub(super) fn check_fits(
        &self,
        module: &str,
        shape: &[usize],
    ) -> std::result::Result<(), String> {
        let (out, rank) = (self.up.shape[0], self.down.shape[0]);
        let cols = self.down.shape.iter().skip(1).product::<usize>();
        let want = (
            shape.first().copied(),
            shape.iter().skip(1).product::<usize>(),
        );
        if (Some(out), cols) != want
            || self.up.shape.get(1) != Some(&rank)
            || self.up.shape.iter().product::<usize>() != out * rank
        {
            return Err(format!(
                "{module}: up {:?} x down {:?} from {} does not fit the model's weight {shape:?}",
                self.up.shape,
                self.down.shape,
                self.file.path().display()
            ));
        }
        Ok(())
    }

    /// Adds this term to `base`, rows `rows` of the weight (PyTorch layout
    /// `[out, in, (kh, kw)]`); fails, naming the LoRA file and key, on a NaN or infinite
    /// value in its matrices (checked as they are decoded).
    pub fn apply(&self, base: &mut [f32], rows: Range<usize>) -> Result<()> {
        let decode = |entry: &TensorEntry| {
            let (values, finite) = decode_f32_checked(self.file.raw(entry), entry.dtype);
            if finite {
                Ok(values)
            } else {
                Err(non_finite(
                    self.file.path(),
                    entry,
                    &values,
                    0,
                    |v| !v.is_finite(),
                    DAMAGED,
                ))
            }
        };
        let (down, up) = (decode(&self.down)?, decode(&self.up)?);
        let rank = self.down.shape[0];
        let cols = down.len() / rank;
        debug_assert_eq!(base.len(), rows.len() * cols);
        for (o, row) in rows.zip(base.chunks_exact_mut(cols)) {
            let o = o - self.row_offset;
            for r in 0..rank {
                let u = up[o * rank + r] * self.factor;
                if u == 0.0 {
                    continue;
                }
                for (w, d) in row.iter_mut().zip(&down[r * cols..(r + 1) * cols]) {
                    *w += u * d;
                }
            }
        }
        Ok(())
    }
}

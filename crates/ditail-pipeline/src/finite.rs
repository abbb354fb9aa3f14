//! The check that a loop's latents stay finite, read a step behind.
//!
//! A step that overflows (f16, broken weights, extreme scales) makes NaN or infinite
//! latents, which every later step keeps and the VAE decodes as black pixels; each loop
//! checks its latents after every step and stops with an error that names the step. The
//! check is one reduction on the device and one bool read back. Read at once, it makes the
//! host wait for the device to finish each step before it queues the next one's kernels, so
//! on a GPU the device would idle while the host prepares the next step's first launches. So
//! each step's read is started after the step is queued and finished after the next step is
//! queued (burn's `into_data_async`, polled once to queue the read): the host runs a step
//! ahead, and an overflow stops the loop one step later than it happened, still named by
//! its own step (its progress report, made before its check finished, has gone out by
//! then). On the CPU the read is ready when it is started, so nothing changes there: the
//! loop stops at the step that overflowed, before reporting it.

use std::future::Future;
use std::pin::Pin;

use burn::backend::ExecutionError;
use burn::prelude::*;
use burn::tensor::TensorData;
use futures_lite::future::{block_on, poll_once};

use crate::error::{PipelineError, Result};
use crate::model::Model;

/// A read of the finiteness flag under way.
type Read = Pin<Box<dyn Future<Output = Result<TensorData, ExecutionError>> + Send>>;

/// The finiteness checks of one loop of `total` steps with `model`.
pub(crate) struct FiniteChecks<'m> {
    model: &'m Model,
    phase: &'static str,
    total: usize,
    /// The last step's check: its step (1-based) and the read, started.
    pending: Option<(usize, Read)>,
}

impl<'m> FiniteChecks<'m> {
    /// The checks of a `phase` (`inversion`, `sampling`, ...) of `total` steps.
    pub(crate) fn new(model: &'m Model, phase: &'static str, total: usize) -> Self {
        Self {
            model,
            phase,
            total,
            pending: None,
        }
    }

    /// Starts the check of `x`, the latents after `step` (1-based), and finishes the
    /// previous step's: fails if that one's, or (where the read is ready at once) this
    /// one's, were not finite.
    pub(crate) fn after_step(&mut self, x: &Tensor<4>, step: usize) -> Result<()> {
        let mut read: Read = Box::pin(x.clone().is_finite().all().into_data_async());
        // Polled once, the read is queued behind the step's kernels (and answered at once
        // where it is ready already, as on the CPU).
        let ready = block_on(poll_once(&mut read));
        if let Some((previous, read)) = self.pending.take() {
            self.finish_read(previous, read)?;
        }
        match ready {
            Some(data) => self.judge(step, data),
            None => {
                self.pending = Some((step, read));
                Ok(())
            }
        }
    }

    /// Finishes the last step's check: fails if its latents were not finite.
    pub(crate) fn finish(&mut self) -> Result<()> {
        match self.pending.take() {
            Some((step, read)) => self.finish_read(step, read),
            None => Ok(()),
        }
    }

    fn finish_read(&self, step: usize, read: Read) -> Result<()> {
        self.judge(step, block_on(read))
    }

    /// An error naming `step` unless the flag read says every value was finite.
    fn judge(&self, step: usize, data: Result<TensorData, ExecutionError>) -> Result<()> {
        // A failed read is the device failing, as `into_scalar` panicked on before.
        let data = data.unwrap_or_else(|e| panic!("reading a flag from the device failed: {e:?}"));
        let finite = data
            .convert::<bool>()
            .try_to_vec::<bool>()
            .is_ok_and(|v| v.iter().all(|&b| b));
        if finite {
            return Ok(());
        }
        let dtype = self.model.dtype();
        let hint = if matches!(dtype, burn::tensor::DType::F32 | burn::tensor::DType::F64) {
            "this happened in f32, so the model's weights (or a LoRA's) are probably broken, or \
             the guidance or condition scales are extreme"
                .to_string()
        } else {
            format!("{dtype:?} overflowed; run again in f32 (`--dtype f32`)")
        };
        Err(PipelineError::NonFiniteLatents {
            phase: self.phase,
            step,
            total: self.total,
            model: self.model.name().to_string(),
            dtype: format!("{dtype:?}"),
            hint,
        })
    }
}

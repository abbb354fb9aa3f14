//! The time embedding of every timestep of a run, made once and read a row a step.
//!
//! A forward's time embedding depends on the timestep alone (and, for SDXL, on the added
//! embedding, which is the same at every step of a run): the sinusoids, the time MLP (2
//! products), its SiLU, and each ResNet's projection `time_emb_proj` (one product each,
//! SD1.5: 22). On a GPU those are some 25 launches a step that do almost no arithmetic. A
//! run knows its timesteps beforehand, so a [`TimeTable`] runs the MLP once over all of
//! them, and each ResNet's projection once over all of those rows, the first time the
//! ResNet asks; a step then reads its rows of each projection, a view that the convolution
//! adding it takes as it is (no copy).
//!
//! Each row is the product of the same weights with the same embedding row as a step's own
//! computation: the same bits where the product sums each row alike however many rows it
//! has (the CPU's 512-bit GEMM), else within the product's rounding.

use std::cell::{OnceCell, RefCell};
use std::collections::BTreeMap;

use burn::prelude::*;

use crate::hook::Site;
use crate::kernels::linear::linear;
use crate::resnet::ResnetBlock2d;

/// The time embeddings (after their SiLU) of a run's timesteps and, as the ResNets ask for
/// them, each ResNet's projection of them.
#[derive(Debug)]
pub(crate) struct TimeTable {
    timesteps: Vec<f32>,
    /// `[timesteps * rows, temb]`, `rows` a timestep (1, or SDXL's batch).
    silu_temb: OnceCell<(Tensor<2>, usize)>,
    /// `[timesteps * rows, out_channels]` per ResNet, by its site.
    projections: RefCell<BTreeMap<Site, Tensor<2>>>,
}

impl TimeTable {
    /// A table for `timesteps`, empty until the first step fills it.
    pub(crate) fn new(timesteps: &[f32]) -> Self {
        Self {
            timesteps: timesteps.to_vec(),
            silu_temb: OnceCell::new(),
            projections: RefCell::default(),
        }
    }

    /// How many ResNets' projections it holds.
    pub(crate) fn len(&self) -> usize {
        self.projections.borrow().len()
    }

    /// The embeddings of `timestep`, if it is one of the table's, with `embed` making those
    /// of all its timesteps the first time (`[timesteps * rows, temb]` after the SiLU, and
    /// `rows`).
    pub(crate) fn step(
        &self,
        timestep: f32,
        embed: impl FnOnce(&[f32]) -> (Tensor<2>, usize),
    ) -> Option<StepTime<'_>> {
        let index = self.timesteps.iter().position(|&t| t == timestep)?;
        let (_, rows) = self.silu_temb.get_or_init(|| embed(&self.timesteps));
        Some(StepTime::Table {
            table: self,
            start: index * rows,
            rows: *rows,
        })
    }

    /// Rows `start..start + rows` of `resnet`'s projection of the table, projecting all of
    /// it the first time.
    fn projection(
        &self,
        site: Site,
        resnet: &ResnetBlock2d,
        start: usize,
        rows: usize,
    ) -> Option<Tensor<4>> {
        let proj = resnet.time_emb_proj.as_ref()?;
        let all = {
            let mut projections = self.projections.borrow_mut();
            let (silu_temb, _) = self.silu_temb.get()?;
            projections
                .entry(site)
                .or_insert_with(|| linear(proj, silu_temb.clone()))
                .clone()
        };
        let [_, c] = all.dims();
        Some(all.narrow(0, start, rows).reshape([rows, c, 1, 1]))
    }
}

/// The time embedding a forward's ResNets add: this step's, or its rows of a run's table.
#[derive(Clone, Debug)]
pub(crate) enum StepTime<'a> {
    /// The step's embedding after its SiLU, `[1 or batch, temb]`: each ResNet projects it.
    /// (Boxed: a tensor handle is some 30 times the size of the other variant.)
    Own(Box<Tensor<2>>),
    /// Rows `start..start + rows` of `table`.
    Table {
        table: &'a TimeTable,
        start: usize,
        rows: usize,
    },
}

impl StepTime<'_> {
    /// `resnet`'s projection of the embedding (at `site`), shaped to add to its conv1's
    /// output; `None` for a ResNet without one.
    ///
    /// # Shapes
    /// - output: `[1 or batch, out_channels, 1, 1]`
    pub(crate) fn projection(&self, site: Site, resnet: &ResnetBlock2d) -> Option<Tensor<4>> {
        match self {
            StepTime::Own(silu_temb) => resnet.time_projection(Some((**silu_temb).clone())),
            StepTime::Table { table, start, rows } => table.projection(site, resnet, *start, *rows),
        }
    }
}

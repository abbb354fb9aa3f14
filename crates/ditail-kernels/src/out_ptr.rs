//! The output buffer of a CPU kernel, shared by its rayon tasks, each of which writes its
//! own disjoint part (a tile, a slice of channels, a block of rows of one head).

/// A pointer into a kernel's output that tasks on other threads may write through.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(*mut f32);

// SAFETY: every kernel that shares one gives each task a disjoint part of the buffer to
// write, and reads nothing through it; the buffer outlives the parallel loop.
unsafe impl Send for OutPtr {}
// SAFETY: as for `Send`: tasks write disjoint parts and read nothing through it.
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The start of `out`.
    pub(crate) fn new(out: &mut [f32]) -> Self {
        Self(out.as_mut_ptr())
    }

    /// The start of `out`'s spare capacity, for a kernel that writes every value before
    /// the caller sets the length.
    pub(crate) fn spare(out: &mut Vec<f32>) -> Self {
        Self(out.spare_capacity_mut().as_mut_ptr().cast())
    }

    /// The pointer (a method, so that closures capture the `Sync` wrapper, not the field).
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

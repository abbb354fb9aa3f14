//! Handles: what C holds is an id, never an address. Each kind of object lives in a table
//! from id to `Arc`; ids are never reused, so a freed handle (or one of another kind) is
//! recognised and refused instead of being read, and freeing a handle another thread is
//! using only drops the table's reference: the object lives until that call returns.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::error::{Error, Result, Status};

/// The first id handed out, and the step between ids: ids look like aligned addresses (some
/// FFI layers check pointers' alignment) and are never 0 (NULL).
const FIRST_ID: usize = 0x10_000;
const ID_STEP: usize = 16;

/// One counter for every kind, so that a handle of one kind is never a live handle of another.
static NEXT_ID: AtomicUsize = AtomicUsize::new(FIRST_ID);

/// The live objects of one kind.
pub(crate) struct Table<T> {
    /// What C calls this kind, for messages (`"model"`, ...).
    kind: &'static str,
    objects: Mutex<BTreeMap<usize, Arc<T>>>,
}

impl<T> Table<T> {
    pub const fn new(kind: &'static str) -> Self {
        Self {
            kind,
            objects: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<usize, Arc<T>>> {
        // The table is consistent whatever panicked while it was held.
        self.objects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds an object; returns its new handle.
    pub fn insert(&self, object: T) -> usize {
        let id = NEXT_ID.fetch_add(ID_STEP, Ordering::Relaxed);
        assert!(id >= FIRST_ID, "ditail handle ids ran out");
        self.lock().insert(id, Arc::new(object));
        id
    }

    /// The object of a handle; `name` is the argument's name for messages.
    pub fn get(&self, handle: usize, name: &str) -> Result<Arc<T>> {
        if handle == 0 {
            return Err(Error::invalid(format!("{name} is NULL")));
        }
        self.lock().get(&handle).cloned().ok_or_else(|| {
            Error::new(
                Status::InvalidHandle,
                format!(
                    "{name} ({handle:#x}) is not a live ditail {} handle: already freed, or \
                     not a {} handle",
                    self.kind, self.kind
                ),
            )
        })
    }

    /// Removes a handle (NULL is a no-op); the object goes when its last user is done.
    pub fn remove(&self, handle: usize) -> Result<()> {
        if handle == 0 {
            return Ok(());
        }
        let removed = self.lock().remove(&handle);
        match removed {
            // Dropped here, outside the lock (a model takes a moment to free).
            Some(object) => {
                drop(object);
                Ok(())
            }
            None => Err(Error::new(
                Status::InvalidHandle,
                format!(
                    "{handle:#x} is not a live ditail {} handle: freed twice, or not a {} handle",
                    self.kind, self.kind
                ),
            )),
        }
    }
}

/// Pixel buffers handed to C (`ditail_decode`, `ditail_load_image`), by their address, so
/// that `ditail_rgb_free` knows their length and refuses anything else.
pub(crate) struct Buffers {
    buffers: Mutex<BTreeMap<usize, Box<[u8]>>>,
}

impl Buffers {
    pub const fn new() -> Self {
        Self {
            buffers: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<usize, Box<[u8]>>> {
        self.buffers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps a buffer until it is freed; returns the address C gets.
    pub fn insert(&self, data: Vec<u8>) -> *mut u8 {
        let mut data = data.into_boxed_slice();
        let ptr = data.as_mut_ptr();
        self.lock().insert(ptr.addr(), data);
        ptr
    }

    /// Frees a buffer (NULL is a no-op).
    pub fn remove(&self, ptr: *mut u8) -> Result<()> {
        if ptr.is_null() {
            return Ok(());
        }
        let removed = self.lock().remove(&ptr.addr());
        match removed {
            Some(data) => {
                drop(data);
                Ok(())
            }
            None => Err(Error::new(
                Status::InvalidHandle,
                format!(
                    "{ptr:p} is not a pixel buffer from ditail: freed twice, or allocated \
                     elsewhere"
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_and_foreign_handles_are_refused() {
        static A: Table<u32> = Table::new("a");
        static B: Table<u32> = Table::new("b");
        let a = A.insert(1);
        let b = B.insert(2);
        assert_ne!(a, b);
        assert_eq!(*A.get(a, "x").unwrap(), 1);
        assert_eq!(A.get(b, "x").unwrap_err().status, Status::InvalidHandle);
        assert_eq!(A.get(0, "x").unwrap_err().status, Status::InvalidArgument);
        let held = A.get(a, "x").unwrap();
        A.remove(a).unwrap();
        assert_eq!(*held, 1, "a user keeps the object alive");
        assert_eq!(A.remove(a).unwrap_err().status, Status::InvalidHandle);
        assert_eq!(A.get(a, "x").unwrap_err().status, Status::InvalidHandle);
        assert!(A.remove(0).is_ok());
        B.remove(b).unwrap();
    }

    #[test]
    fn buffers_are_freed_once() {
        static BUFS: Buffers = Buffers::new();
        let p = BUFS.insert(vec![1, 2, 3]);
        BUFS.remove(p).unwrap();
        assert_eq!(BUFS.remove(p).unwrap_err().status, Status::InvalidHandle);
        assert!(BUFS.remove(std::ptr::null_mut()).is_ok());
    }
}

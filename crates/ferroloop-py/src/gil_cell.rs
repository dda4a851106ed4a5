//! `GilCell`: loop state shared between threads, guarded by the GIL itself.
//!
//! Every Python thread that touches a loop holds the GIL, so a lock of our own would be
//! paid on every `call_soon` for nothing. `GilCell` is a `RefCell` whose every access
//! demands a `Python` token: the module declares `gil_used = true`, so holding a token
//! means holding the GIL and no two threads can be inside the cell at once. A re-entrant
//! borrow (a callback running while the loop holds the cell) panics instead of
//! deadlocking — the rule is to never call into Python while a borrow is alive.

use std::cell::{RefCell, RefMut};

use pyo3::Python;

/// A `RefCell` usable from any thread that holds the GIL.
pub struct GilCell<T>(RefCell<T>);

// SAFETY: all access goes through `borrow_mut`, which requires a `Python` token; with the
// GIL in use (see the module declaration) only one thread at a time can hold one. `T: Send`
// because the value may be dropped or used by whichever thread holds the GIL.
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        GilCell(RefCell::new(value))
    }

    /// Borrows the value mutably; panics if it is already borrowed (a re-entrancy bug).
    #[inline]
    pub fn borrow_mut<'a>(&'a self, _py: Python<'_>) -> RefMut<'a, T> {
        self.0.borrow_mut()
    }

    /// Borrows the value during garbage collection, where no `Python` token can be had
    /// but the collector holds the GIL. Returns `None` while the value is borrowed: a
    /// traversal that skips references only makes the collector more conservative.
    pub fn try_borrow_in_gc(&self) -> Option<RefMut<'_, T>> {
        self.0.try_borrow_mut().ok()
    }
}

//! Timers: deadlines in a binary min-heap, cancelled lazily.
//!
//! A timer is `(deadline_ns, seq, item)`. `seq` grows with every push, so two timers due
//! at the same nanosecond fire in the order they were scheduled. Cancelling a timer does
//! not search the heap: the owner marks the item cancelled and the heap drops it when it
//! reaches the top, or in [`TimerHeap::compact`] when cancelled items pile up — the rule
//! asyncio uses (more than [`COMPACT_MIN_TIMERS`] timers, more than half cancelled).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// Below this many timers the heap is never compacted; popping the dead ones is cheaper.
pub const COMPACT_MIN_TIMERS: usize = 100;

struct Entry<T> {
    deadline_ns: i64,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.deadline_ns == other.deadline_ns && self.seq == other.seq
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.deadline_ns, self.seq).cmp(&(other.deadline_ns, other.seq))
    }
}

/// A min-heap of timers ordered by deadline, then by scheduling order.
pub struct TimerHeap<T> {
    heap: BinaryHeap<Reverse<Entry<T>>>,
    next_seq: u64,
    /// Items marked cancelled by their owner and not yet removed; maintained by the owner
    /// through [`TimerHeap::note_cancelled`] and by [`TimerHeap::pop`]/[`TimerHeap::compact`].
    cancelled: usize,
}

impl<T> Default for TimerHeap<T> {
    fn default() -> Self {
        TimerHeap {
            heap: BinaryHeap::new(),
            next_seq: 0,
            cancelled: 0,
        }
    }
}

impl<T> TimerHeap<T> {
    /// An empty heap.
    pub fn new() -> Self {
        Self::default()
    }

    /// Schedules `item` at `deadline_ns`.
    pub fn push(&mut self, deadline_ns: i64, item: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse(Entry {
            deadline_ns,
            seq,
            item,
        }));
    }

    /// The earliest deadline and its item, if any.
    pub fn peek(&self) -> Option<(i64, &T)> {
        self.heap.peek().map(|e| (e.0.deadline_ns, &e.0.item))
    }

    /// Removes and returns the earliest timer. `was_cancelled` tells the heap whether the
    /// popped item had been counted by [`TimerHeap::note_cancelled`].
    pub fn pop(&mut self, was_cancelled: impl Fn(&T) -> bool) -> Option<(i64, T)> {
        let Reverse(entry) = self.heap.pop()?;
        if was_cancelled(&entry.item) {
            self.cancelled = self.cancelled.saturating_sub(1);
        }
        Some((entry.deadline_ns, entry.item))
    }

    /// Records that `count` items in the heap were cancelled by their owners.
    pub fn note_cancelled(&mut self, count: usize) {
        self.cancelled += count;
    }

    /// How many cancelled items are still in the heap.
    pub fn cancelled_count(&self) -> usize {
        self.cancelled
    }

    /// Whether cancelled items are numerous enough to be worth [`TimerHeap::compact`].
    pub fn should_compact(&self) -> bool {
        self.heap.len() > COMPACT_MIN_TIMERS && self.cancelled * 2 > self.heap.len()
    }

    /// Removes every item for which `is_cancelled` is true; returns them so the caller
    /// can drop them where it is safe to (dropping may run foreign code).
    pub fn compact(&mut self, is_cancelled: impl Fn(&T) -> bool) -> Vec<T> {
        let mut removed = Vec::new();
        let mut kept = Vec::with_capacity(self.heap.len());
        for Reverse(entry) in std::mem::take(&mut self.heap) {
            if is_cancelled(&entry.item) {
                removed.push(entry.item);
            } else {
                kept.push(Reverse(entry));
            }
        }
        self.heap = BinaryHeap::from(kept);
        self.cancelled = 0;
        removed
    }

    /// Removes every timer, returning the items.
    pub fn drain(&mut self) -> Vec<T> {
        self.cancelled = 0;
        std::mem::take(&mut self.heap)
            .into_iter()
            .map(|Reverse(e)| e.item)
            .collect()
    }

    /// Every item in the heap, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.heap.iter().map(|Reverse(e)| &e.item)
    }

    /// Number of timers in the heap, cancelled ones included.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when no timer is scheduled.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn pops_in_deadline_then_fifo_order() {
        let mut heap = TimerHeap::new();
        heap.push(30, "c");
        heap.push(10, "a1");
        heap.push(20, "b");
        heap.push(10, "a2");
        let order: Vec<_> = std::iter::from_fn(|| heap.pop(|_| false).map(|(_, i)| i)).collect();
        assert_eq!(order, ["a1", "a2", "b", "c"]);
    }

    #[test]
    fn negative_and_saturated_deadlines_order_correctly() {
        let mut heap = TimerHeap::new();
        heap.push(i64::MAX, 3);
        heap.push(-5, 1);
        heap.push(0, 2);
        assert_eq!(heap.peek(), Some((-5, &1)));
        assert_eq!(heap.pop(|_| false), Some((-5, 1)));
    }

    #[test]
    fn compacts_only_when_more_than_half_of_many_are_cancelled() {
        let mut heap = TimerHeap::new();
        let items: Vec<_> = (0..200).map(|i| (i, Cell::new(false))).collect();
        for (i, item) in items.iter().enumerate() {
            heap.push(i as i64, item);
        }
        for item in items.iter().take(100) {
            item.1.set(true);
            heap.note_cancelled(1);
        }
        assert!(!heap.should_compact(), "exactly half is not more than half");
        items[150].1.set(true);
        heap.note_cancelled(1);
        assert!(heap.should_compact());
        let removed = heap.compact(|item| item.1.get());
        assert_eq!(removed.len(), 101);
        assert_eq!(heap.len(), 99);
        assert_eq!(heap.cancelled_count(), 0);
        assert_eq!(heap.pop(|_| false).map(|(d, _)| d), Some(100));
    }

    #[test]
    fn pop_discounts_cancelled_items() {
        let mut heap = TimerHeap::new();
        heap.push(1, true);
        heap.push(2, false);
        heap.note_cancelled(1);
        assert_eq!(heap.cancelled_count(), 1);
        heap.pop(|cancelled| *cancelled);
        assert_eq!(heap.cancelled_count(), 0);
        heap.pop(|cancelled| *cancelled);
        assert!(heap.is_empty());
    }

    #[test]
    fn small_heaps_never_compact() {
        let mut heap = TimerHeap::new();
        for i in 0..10 {
            heap.push(i, ());
            heap.note_cancelled(1);
        }
        assert!(!heap.should_compact());
    }
}

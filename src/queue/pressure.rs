//! What the paced bodies of the lower classes read on every frame, without the queue's lock:
//! per class, the requests waiting for a permit and the admitted ones whose response head is
//! not out yet.

use std::sync::atomic::{AtomicU32, Ordering};

use super::priority::CLASSES;

/// Per-class counts a low-priority body checks before its next chunk: a higher class that waits
/// or has not answered yet needs the CPU now.
#[derive(Debug, Default)]
pub(crate) struct Pressure {
    /// Requests of each class in the queue (mirrors the queue lengths, set under the lock).
    waiting: [AtomicU32; CLASSES],
    /// Admitted requests of each class before their response head.
    heads: [AtomicU32; CLASSES],
}

impl Pressure {
    pub(crate) fn set_waiting(&self, class: usize, n: usize) {
        self.waiting[class].store(u32::try_from(n).unwrap_or(u32::MAX), Ordering::Relaxed);
    }

    pub(crate) fn head_started(&self, class: usize) {
        self.heads[class].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn head_done(&self, class: usize) {
        self.heads[class].fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether a class more important than `class` waits for a permit or for its head.
    pub(crate) fn above(&self, class: usize) -> bool {
        (0..class).any(|h| {
            self.waiting[h].load(Ordering::Relaxed) > 0 || self.heads[h].load(Ordering::Relaxed) > 0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_higher_classes_count() {
        let p = Pressure::default();
        p.head_started(3);
        p.set_waiting(2, 4);
        assert!(!p.above(2) && p.above(3));
        p.set_waiting(2, 0);
        assert!(!p.above(3));
        p.head_started(0);
        assert!(p.above(1) && !p.above(0));
        p.head_done(0);
        assert!(!p.above(3));
    }
}

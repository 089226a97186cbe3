//! The bounded log of recent slow requests.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::snapshot::SlowRequestEntry;

/// A ring buffer of the most recent slow requests.
pub(crate) struct SlowLog {
    // Locked only when a request turned out slow, never on the fast path; the ring is bounded by
    // `capacity`, oldest entries go first.
    entries: Mutex<VecDeque<SlowRequestEntry>>,
    capacity: usize,
}

impl SlowLog {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity,
        }
    }

    pub(crate) fn push(&self, entry: SlowRequestEntry) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() == self.capacity {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    /// Newest first.
    pub(crate) fn recent(&self) -> Vec<SlowRequestEntry> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.iter().rev().cloned().collect()
    }

    pub(crate) fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn entry(n: u64) -> SlowRequestEntry {
        SlowRequestEntry {
            at: SystemTime::UNIX_EPOCH,
            method: "GET".into(),
            route: "/r".into(),
            path: format!("/r/{n}"),
            status: Some(200),
            outcome: super::super::snapshot::Outcome::Completed,
            duration: Duration::from_millis(n),
            head: None,
            request_id: None,
            phases: Vec::new(),
        }
    }

    #[test]
    fn ring_keeps_the_newest() {
        let log = SlowLog::new(3);
        for n in 0..5 {
            log.push(entry(n));
        }
        let paths: Vec<_> = log.recent().into_iter().map(|e| e.path).collect();
        assert_eq!(paths, ["/r/4", "/r/3", "/r/2"]);
        let off = SlowLog::new(0);
        off.push(entry(1));
        assert!(off.recent().is_empty());
    }
}

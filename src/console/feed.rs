//! The shared feed: one task computes a snapshot per interval while someone watches, and every
//! viewer's event stream sends that same frame.

use std::convert::Infallible;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::{BufMut as _, Bytes, BytesMut};
use futures_util::Stream;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::snapshot::ConsoleSnapshot;
use crate::stack::PerfHandles;

/// The first bytes of every event stream: how long a browser waits before reconnecting.
const RETRY: &[u8] = b"retry: 2000\n\n";

/// The live performance console over the handles of a [`PerfStack`](crate::stack::PerfStack):
/// its [`router`](Self::router) serves the page, the event stream and the admin controls.
///
/// The snapshot is computed by one task, once per interval, and only while at least one viewer
/// is connected; every viewer is sent the same serialized frame (one `Bytes`, shared), and a
/// viewer holds only the latest one: a slow or idle page never makes the server queue frames
/// for it. Cheap to clone (clones share the feed).
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    handles: PerfHandles,
    interval: Duration,
    /// The latest frame; `None` until the first computation. Viewers subscribe to it.
    frames: watch::Sender<Option<Frame>>,
    /// Snapshots the feed computed (the `seq` of the latest).
    computed: AtomicU64,
    /// Whether the feed task was spawned (on the first viewer, so `new` needs no runtime).
    started: AtomicBool,
}

/// One computed snapshot, serialized once for every viewer.
#[derive(Clone)]
struct Frame {
    /// `event: snapshot`, `id:` and `data:` lines of the Server-Sent Event.
    event: Bytes,
}

impl Console {
    /// A console over `handles`, with a snapshot per second.
    pub fn new(handles: PerfHandles) -> Self {
        Self::with_interval(handles, Duration::from_secs(1))
    }

    /// A console computing a snapshot every `interval` (at least 100 ms; shorter is raised).
    pub fn with_interval(handles: PerfHandles, interval: Duration) -> Self {
        let (frames, _) = watch::channel(None);
        Self {
            inner: Arc::new(Inner {
                handles,
                interval: interval.max(Duration::from_millis(100)),
                frames,
                computed: AtomicU64::new(0),
                started: AtomicBool::new(false),
            }),
        }
    }

    /// The layers' handles the console reads and controls.
    pub fn handles(&self) -> &PerfHandles {
        &self.inner.handles
    }

    /// A snapshot taken now, outside the feed (its `seq` is `0`).
    pub fn snapshot(&self) -> ConsoleSnapshot {
        ConsoleSnapshot::take(&self.inner.handles, 0, self.interval_ms())
    }

    /// Snapshots the feed has computed so far: at most one per interval, however many viewers.
    pub fn snapshots_computed(&self) -> u64 {
        self.inner.computed.load(Ordering::Relaxed)
    }

    /// Event streams open now.
    pub fn viewers(&self) -> usize {
        self.inner.frames.receiver_count()
    }

    fn interval_ms(&self) -> u64 {
        u64::try_from(self.inner.interval.as_millis()).unwrap_or(u64::MAX)
    }

    /// A viewer's event stream: the `retry` line, the latest frame if the feed is running (one
    /// left from before an idle spell would be old news), then each new frame. Frames a slow
    /// viewer missed are skipped, never queued.
    pub(super) fn events(&self) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
        self.start();
        let running = self.viewers() > 0;
        let mut rx = self.inner.frames.subscribe();
        let latest = rx
            .borrow_and_update()
            .as_ref()
            .filter(|_| running)
            .map(|f| f.event.clone());
        let first = std::iter::once(Bytes::from_static(RETRY)).chain(latest);
        let rest = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            let event = rx.borrow_and_update().as_ref()?.event.clone();
            Some((event, rx))
        });
        futures_util::StreamExt::map(
            futures_util::StreamExt::chain(futures_util::stream::iter(first), rest),
            Ok,
        )
    }

    /// Spawns the feed task once.
    fn start(&self) {
        if !self.inner.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(feed(Arc::downgrade(&self.inner)));
        }
    }
}

/// Computes and publishes a frame per interval while anyone watches; ends with the console.
async fn feed(console: Weak<Inner>) {
    let interval = match console.upgrade() {
        Some(inner) => inner.interval,
        None => return,
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = console.upgrade() else {
            return;
        };
        if inner.frames.receiver_count() > 0 {
            inner.publish();
        }
    }
}

impl Inner {
    fn publish(&self) {
        let seq = self.computed.fetch_add(1, Ordering::Relaxed) + 1;
        let interval_ms = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX);
        let snapshot = ConsoleSnapshot::take(&self.handles, seq, interval_ms);
        let mut event = BytesMut::with_capacity(16 * 1024);
        event.put_slice(b"event: snapshot\nid: ");
        event.put_slice(itoa::Buffer::new().format(seq).as_bytes());
        event.put_slice(b"\ndata: ");
        // Compact JSON has no newline, so it is one `data:` line. Serializing plain data into
        // memory cannot fail; if it ever did, viewers keep the previous frame.
        if serde_json::to_writer((&mut event).writer(), &snapshot).is_err() {
            return;
        }
        event.put_slice(b"\n\n");
        self.frames.send_replace(Some(Frame {
            event: event.freeze(),
        }));
    }
}

impl fmt::Debug for Console {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Console")
            .field("interval", &self.inner.interval)
            .field("viewers", &self.viewers())
            .field("snapshots_computed", &self.snapshots_computed())
            .finish()
    }
}

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::adapt::Rung;
use super::codec::Codec;
use super::state::Shared;
use super::Algorithm;
use crate::timings::Timings;
use crate::BoxError;

/// Input fed to the encoder per step: 0.1-0.6 ms of CPU at the normal levels (bench), so a
/// large chunk never holds a worker for long.
const SLICE: usize = 64 * 1024;
/// Input processed in one poll before yielding back to the runtime.
const MAX_PER_POLL: usize = 4 * SLICE;
/// Compressed bytes gathered before they are sent as one frame.
const EMIT: usize = 32 * 1024;

pin_project! {
    /// Response body of [`AdaptiveCompression`](super::AdaptiveCompression): the inner body
    /// compressed as it flows, or passed through as it is.
    pub struct CompressionBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

/// A body the layers outside make themselves (a queue's or a limiter's rejection) passes
/// through uncompressed.
impl<B: From<bytes::Bytes>> From<bytes::Bytes> for CompressionBody<B> {
    fn from(bytes: bytes::Bytes) -> Self {
        Self::identity(B::from(bytes))
    }
}

impl<B: Default> Default for CompressionBody<B> {
    fn default() -> Self {
        Self::identity(B::default())
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Identity { #[pin] inner: B },
        Compressed {
            #[pin]
            inner: B,
            // Boxed: keeps the identity case small to move.
            state: Box<Encoder>,
        },
        Empty,
    }
}

/// The compressing side of a body.
struct Encoder {
    /// `None` once finished (given back to the pool).
    codec: Option<Codec>,
    shared: Arc<Shared>,
    algorithm: Algorithm,
    rung: Rung,
    /// Compressed bytes not sent yet.
    out: Vec<u8>,
    /// Capacity of a fresh `out`.
    out_capacity: usize,
    /// Input received but not encoded yet (a slice of the inner body's chunk).
    pending: Bytes,
    /// Server-sent events: flush after each inner frame.
    flush_each: bool,
    /// Flush once `pending` is encoded.
    flush_due: bool,
    /// The stream is finished (trailer written); only `out` and `trailers` are left.
    finished: bool,
    trailers: Option<HeaderMap>,
    input: u64,
    output: u64,
    busy_ns: u64,
    /// Counted in the load's `in_flight` (server-sent events are not).
    counted: bool,
    /// Stats recorded.
    recorded: bool,
    /// Compressed by the codec's one-shot path ([`Codec::encode_whole`]): its cost is not a
    /// sample of the streaming encoder's, so it is left out of the cost average that sizes
    /// levels for large (streamed) bodies.
    one_shot: bool,
    /// The request's phase record: gets a `compression` phase with the encoder time.
    timings: Option<Timings>,
}

impl Encoder {
    /// Runs `f` on the codec, timing it; an error means the codec is unusable.
    fn run(
        &mut self,
        f: impl FnOnce(&mut Codec, &mut Vec<u8>) -> std::io::Result<()>,
    ) -> Result<(), BoxError> {
        let Some(codec) = self.codec.as_mut() else {
            return Ok(());
        };
        let start = Instant::now();
        let before = self.out.len();
        let r = f(codec, &mut self.out);
        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.busy_ns += ns;
        self.shared.load.add_busy(ns);
        self.output += (self.out.len() - before) as u64;
        r.map_err(|e| {
            // A failed encoder is dropped, never pooled.
            self.codec = None;
            BoxError::from(e)
        })
    }

    fn finish(&mut self) -> Result<(), BoxError> {
        self.run(|c, out| c.finish(out))?;
        self.end();
        Ok(())
    }

    /// The trailer is written: the codec goes back to the pool, stats are recorded.
    fn end(&mut self) {
        self.finished = true;
        if let Some(codec) = self.codec.take() {
            codec.recycle();
        }
        self.record();
    }

    fn take_out(&mut self) -> Bytes {
        // After the last frame nothing more is written: no fresh buffer.
        let next = if self.finished {
            Vec::new()
        } else {
            Vec::with_capacity(self.out_capacity)
        };
        let mut out = std::mem::replace(&mut self.out, next);
        // `Bytes` keeps the whole allocation, and a cache outside keeps the frame (weighed by
        // its length): a buffer sized for the worst case gives back what it did not use.
        if out.capacity() - out.len() > out.len() / 2 + 512 {
            out.shrink_to_fit();
        }
        Bytes::from(out)
    }

    /// Stats, once: at the end, or when the body is dropped early.
    fn record(&mut self) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        if self.counted {
            self.shared.load.leave();
        }
        let encoding = self.algorithm.encoding();
        self.shared.bytes(encoding, self.input, self.output);
        if self.finished && !self.one_shot {
            self.shared
                .load
                .record_cost(self.algorithm, self.rung, self.busy_ns, self.input);
        }
        if let Some(t) = self.timings.take() {
            t.record("compression", std::time::Duration::from_nanos(self.busy_ns));
        }
    }
}

/// A poll of the body's next frame.
type PollFrame = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

/// The compressing side of [`CompressionBody::poll_frame`]: encodes the inner body in slices
/// of at most [`SLICE`], sending output every [`EMIT`] bytes, whenever the inner body is not
/// ready, and after [`MAX_PER_POLL`] of input (then yielding).
fn poll_compressed<B>(mut inner: Pin<&mut B>, s: &mut Encoder, cx: &mut Context<'_>) -> PollFrame
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let mut done_this_poll = 0usize;
    loop {
        if s.finished {
            if !s.out.is_empty() {
                return s.emit();
            }
            return Poll::Ready(s.trailers.take().map(|t| Ok(Frame::trailers(t))));
        }
        if !s.pending.is_empty() {
            if let Some(poll) = s.encode_slice(&mut done_this_poll, cx)? {
                return poll;
            }
            continue;
        }
        match inner.as_mut().poll_frame(cx) {
            Poll::Pending if s.out.is_empty() => return Poll::Pending,
            Poll::Pending => return s.emit(),
            Poll::Ready(None) => s.finish()?,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) => {
                    let data = data.copy_to_bytes(data.remaining());
                    // The whole body in one frame: the codec's one-shot path, if it has one
                    // (libdeflate), is faster than streaming.
                    if s.input == 0
                        && !s.flush_each
                        && inner.is_end_stream()
                        && s.encode_whole(&data)?
                    {
                        continue;
                    }
                    s.pending = data;
                    s.flush_due = s.flush_each;
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        s.trailers = Some(t);
                        s.finish()?;
                    }
                }
            },
        }
    }
}

impl Encoder {
    /// Sends the output gathered so far as one frame.
    #[inline]
    fn emit(&mut self) -> PollFrame {
        Poll::Ready(Some(Ok(Frame::data(self.take_out()))))
    }

    /// Encodes one slice of `pending`, flushing after the last one of a frame when due.
    /// `Some` is what the poll returns now: output to send, or a yield once this poll has
    /// done its share.
    fn encode_slice(
        &mut self,
        done_this_poll: &mut usize,
        cx: &mut Context<'_>,
    ) -> Result<Option<PollFrame>, BoxError> {
        let n = self.pending.len().min(SLICE);
        let chunk = self.pending.split_to(n);
        self.run(|c, out| c.encode(&chunk, out))?;
        self.input += n as u64;
        *done_this_poll += n;
        if self.pending.is_empty() && self.flush_due {
            self.flush_due = false;
            self.run(|c, out| c.flush(out))?;
            if !self.out.is_empty() {
                return Ok(Some(self.emit()));
            }
        }
        if self.out.len() >= EMIT {
            return Ok(Some(self.emit()));
        }
        if *done_this_poll >= MAX_PER_POLL {
            if !self.out.is_empty() {
                return Ok(Some(self.emit()));
            }
            cx.waker().wake_by_ref();
            return Ok(Some(Poll::Pending));
        }
        Ok(None)
    }

    /// Compresses a whole body in one call when the codec has a one-shot path; `false` when
    /// it has none (nothing done: stream it).
    fn encode_whole(&mut self, data: &Bytes) -> Result<bool, BoxError> {
        let mut whole = false;
        self.run(|c, out| {
            whole = c.encode_whole(data, out)?;
            Ok(())
        })?;
        if whole {
            self.input = data.len() as u64;
            self.one_shot = true;
            self.end();
        }
        Ok(whole)
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        if let Some(codec) = self.codec.take() {
            // Reset when taken from the pool, so a half-used encoder is fine to keep.
            codec.recycle();
        }
        self.record();
    }
}

impl<B> CompressionBody<B> {
    pub(crate) fn identity(inner: B) -> Self {
        Self {
            kind: Kind::Identity { inner },
        }
    }

    pub(crate) fn empty() -> Self {
        Self { kind: Kind::Empty }
    }

    pub(crate) fn compressed(
        inner: B,
        codec: Codec,
        shared: Arc<Shared>,
        (algorithm, rung): (Algorithm, Rung),
        sse: bool,
        size: Option<u64>,
        timings: Option<Timings>,
    ) -> Self {
        if !sse {
            shared.load.enter();
        }
        // Room for the whole output of a small body (text compresses 3-10x), capped for streams.
        let out_capacity = size.map_or(EMIT, |n| {
            usize::try_from(n / 3 + 64)
                .unwrap_or(EMIT)
                .clamp(1024, EMIT)
        });
        Self {
            kind: Kind::Compressed {
                inner,
                state: Box::new(Encoder {
                    codec: Some(codec),
                    shared,
                    algorithm,
                    rung,
                    out: Vec::with_capacity(out_capacity),
                    out_capacity,
                    pending: Bytes::new(),
                    flush_each: sse,
                    flush_due: false,
                    finished: false,
                    trailers: None,
                    input: 0,
                    output: 0,
                    busy_ns: 0,
                    counted: !sse,
                    recorded: false,
                    one_shot: false,
                    timings,
                }),
            },
        }
    }
}

impl<B> Body for CompressionBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Empty => Poll::Ready(None),
            KindProj::Identity { inner } => match inner.poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(
                    frame.map_data(|mut d| d.copy_to_bytes(d.remaining()))
                ))),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            KindProj::Compressed { inner, state } => poll_compressed(inner, state, cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Identity { inner } => inner.is_end_stream(),
            Kind::Compressed { state, .. } => {
                state.finished && state.out.is_empty() && state.trailers.is_none()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Identity { inner } => inner.size_hint(),
            Kind::Compressed { .. } => SizeHint::default(),
        }
    }
}

impl<B> std::fmt::Debug for CompressionBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Identity { .. } => "identity",
            Kind::Compressed { state, .. } => state.algorithm.as_str(),
            Kind::Empty => "empty",
        };
        f.debug_struct("CompressionBody")
            .field("encoding", &kind)
            .finish_non_exhaustive()
    }
}

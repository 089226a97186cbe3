//! The encoders: one enum over the codec crates, with reuse across responses.
//!
//! zstd and the flate codings (`gzip`, `deflate`) are driven through the resettable raw APIs of
//! the codec crates that async-compression itself drives (`zstd::stream::raw::Encoder`,
//! `flate2::Compress`): a finished encoder goes back to a per-thread pool and the next response
//! resets it instead of allocating its state again (the zstd context is about 1.3 MiB at level 3
//! with an unknown size, the deflate state about 270 KiB: fresh ones page-fault on every
//! response). Brotli has no reset, so it comes fresh, sized for the body (`lgwin` and size
//! hint) when its length is known: from Google's C brotli with `compression-native`, else from
//! async-compression's codec (the Rust port). With `compression-native`, whole `gzip` and
//! `deflate` bodies of up to 256 KiB go to libdeflate in one call ([`Codec::encode_whole`]).

use std::cell::RefCell;
use std::io;

use super::Algorithm;

/// Output is written into spare capacity of the output `Vec`; when less than [`LOW_SPARE`] is
/// left before a call into a codec, this much more is reserved (codecs write what fits and are
/// called again, so a small spare is never an error, only more calls).
const MIN_SPARE: usize = 4 * 1024;
#[cfg_attr(
    not(any(
        feature = "compression-zstd",
        feature = "compression-gzip",
        feature = "compression-deflate"
    )),
    allow(dead_code)
)]
const LOW_SPARE: usize = 512;

/// Makes room in `out` for the next codec call, growing it only when little is left: the
/// body sizes `out` for the whole output of a small body, and this keeps that one allocation.
#[cfg_attr(
    not(any(
        feature = "compression-zstd",
        feature = "compression-gzip",
        feature = "compression-deflate"
    )),
    allow(dead_code)
)]
fn ensure_spare(out: &mut Vec<u8>) {
    if out.capacity() - out.len() < LOW_SPARE {
        out.reserve(MIN_SPARE);
    }
}

/// Encoders kept per thread and per algorithm for reuse.
const POOL_PER_THREAD: usize = 2;

/// One content-coding encoder.
pub(crate) enum Codec {
    #[cfg(feature = "compression-zstd")]
    Zstd(Box<zstd::stream::raw::Encoder<'static>>),
    #[cfg(feature = "compression-gzip")]
    Gzip {
        deflate: Box<flate2::Compress>,
        crc: flate2::Crc,
        header_written: bool,
        level: i32,
    },
    #[cfg(feature = "compression-deflate")]
    Deflate {
        deflate: Box<flate2::Compress>,
        level: i32,
    },
    #[cfg(all(feature = "compression-br", not(feature = "compression-native")))]
    Br(Box<async_compression::codecs::BrotliEncoder>),
    #[cfg(all(feature = "compression-br", feature = "compression-native"))]
    Br(brotlic::BrotliEncoder),
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.algorithm().as_str())
    }
}

thread_local! {
    // Encoders finished on this thread, by `Algorithm::index`. A thread-local pool needs no
    // lock; a body finished on another worker feeds that worker's pool.
    static POOL: RefCell<[Vec<Codec>; 4]> = const { RefCell::new([Vec::new(), Vec::new(), Vec::new(), Vec::new()]) };
}

#[cfg(any(feature = "compression-gzip", feature = "compression-deflate"))]
fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl Codec {
    /// An encoder for `algorithm` at `level`, reused from this thread's pool when `reuse` and one
    /// is there. `size` is the body length when known.
    pub(crate) fn get(
        algorithm: Algorithm,
        level: i32,
        size: Option<u64>,
        reuse: bool,
    ) -> io::Result<Codec> {
        if reuse {
            let pooled = POOL
                .try_with(|p| p.borrow_mut()[algorithm.index()].pop())
                .ok()
                .flatten();
            if let Some(mut codec) = pooled {
                codec.reset(level, size)?;
                return Ok(codec);
            }
        }
        Codec::new(algorithm, level, size)
    }

    /// Gives a finished (or abandoned) encoder back to this thread's pool.
    pub(crate) fn recycle(self) {
        if matches!(self.algorithm(), Algorithm::Br) {
            return;
        }
        let _ = POOL.try_with(|p| {
            let mut p = p.borrow_mut();
            let slot = &mut p[self.algorithm().index()];
            if slot.len() < POOL_PER_THREAD {
                slot.push(self);
            }
        });
    }

    fn new(algorithm: Algorithm, level: i32, size: Option<u64>) -> io::Result<Codec> {
        // Not every codec compiled in reads every argument.
        let _ = (level, size);
        match algorithm {
            #[cfg(feature = "compression-zstd")]
            Algorithm::Zstd => {
                let mut e = zstd::stream::raw::Encoder::new(level)?;
                e.set_pledged_src_size(size)?;
                Ok(Codec::Zstd(Box::new(e)))
            }
            #[cfg(feature = "compression-gzip")]
            Algorithm::Gzip => Ok(Codec::Gzip {
                deflate: Box::new(flate2::Compress::new(flate_level(level), false)),
                crc: flate2::Crc::new(),
                header_written: false,
                level,
            }),
            #[cfg(feature = "compression-deflate")]
            Algorithm::Deflate => Ok(Codec::Deflate {
                deflate: Box::new(flate2::Compress::new(flate_level(level), true)),
                level,
            }),
            #[cfg(feature = "compression-br")]
            Algorithm::Br => Ok(Codec::Br(brotli(level, size)?)),
            #[allow(unreachable_patterns)]
            _ => Err(io::Error::other("content coding not compiled in")),
        }
    }

    /// Prepares a used encoder for a new response.
    fn reset(&mut self, level: i32, size: Option<u64>) -> io::Result<()> {
        match self {
            #[cfg(feature = "compression-zstd")]
            Codec::Zstd(e) => {
                zstd::stream::raw::Operation::reinit(&mut **e)?;
                e.set_parameter(zstd::stream::raw::CParameter::CompressionLevel(level))?;
                e.set_pledged_src_size(size)?;
            }
            #[cfg(feature = "compression-gzip")]
            Codec::Gzip {
                deflate,
                crc,
                header_written,
                level: l,
            } => {
                deflate.reset();
                deflate.set_level(flate_level(level)).map_err(other)?;
                *crc = flate2::Crc::new();
                *header_written = false;
                *l = level;
            }
            #[cfg(feature = "compression-deflate")]
            Codec::Deflate { deflate, level: l } => {
                deflate.reset();
                deflate.set_level(flate_level(level)).map_err(other)?;
                *l = level;
            }
            #[cfg(feature = "compression-br")]
            Codec::Br(b) => *b = brotli(level, size)?,
        }
        let _ = (level, size);
        Ok(())
    }

    pub(crate) fn algorithm(&self) -> Algorithm {
        match self {
            #[cfg(feature = "compression-zstd")]
            Codec::Zstd(_) => Algorithm::Zstd,
            #[cfg(feature = "compression-gzip")]
            Codec::Gzip { .. } => Algorithm::Gzip,
            #[cfg(feature = "compression-deflate")]
            Codec::Deflate { .. } => Algorithm::Deflate,
            #[cfg(feature = "compression-br")]
            Codec::Br(_) => Algorithm::Br,
        }
    }

    /// Compresses `input` as the whole body, header to trailer, in one call, when this codec
    /// has a faster one-shot path for it (libdeflate for `gzip` and `deflate`, bodies up to
    /// [`WHOLE_MAX`]): `Ok(false)`, having done nothing, otherwise. The codec itself is left
    /// untouched (the body is finished without it).
    pub(crate) fn encode_whole(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<bool> {
        let _ = (input, &out);
        match self {
            #[cfg(all(feature = "compression-gzip", feature = "compression-native"))]
            Codec::Gzip {
                level,
                header_written: false,
                ..
            } if input.len() <= WHOLE_MAX => {
                whole::compress(whole::Wrapper::Gzip, *level, input, out)
            }
            #[cfg(all(feature = "compression-deflate", feature = "compression-native"))]
            Codec::Deflate { deflate, level }
                if input.len() <= WHOLE_MAX && deflate.total_out() == 0 =>
            {
                whole::compress(whole::Wrapper::Zlib, *level, input, out)
            }
            _ => Ok(false),
        }
    }

    /// Compresses all of `input`, appending to `out`.
    pub(crate) fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        match self {
            #[cfg(feature = "compression-zstd")]
            Codec::Zstd(e) => {
                use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
                let mut inb = InBuffer::around(input);
                while inb.pos() < input.len() {
                    ensure_spare(out);
                    let pos = out.len();
                    let mut outb = OutBuffer::around_pos(out, pos);
                    e.run(&mut inb, &mut outb)?;
                }
                Ok(())
            }
            #[cfg(feature = "compression-gzip")]
            Codec::Gzip {
                deflate,
                crc,
                header_written,
                ..
            } => {
                if !*header_written {
                    out.extend_from_slice(&GZIP_HEADER);
                    *header_written = true;
                }
                crc.update(input);
                flate(deflate, input, out, flate2::FlushCompress::None)
            }
            #[cfg(feature = "compression-deflate")]
            Codec::Deflate { deflate, .. } => {
                flate(deflate, input, out, flate2::FlushCompress::None)
            }
            #[cfg(feature = "compression-br")]
            Codec::Br(b) => brotli_op(b, input, out, BrOp::Encode),
        }
    }

    /// Emits everything given so far, so that the client can decode it now.
    pub(crate) fn flush(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        match self {
            #[cfg(feature = "compression-zstd")]
            Codec::Zstd(e) => {
                use zstd::stream::raw::{Operation, OutBuffer};
                loop {
                    ensure_spare(out);
                    let pos = out.len();
                    let mut outb = OutBuffer::around_pos(out, pos);
                    if e.flush(&mut outb)? == 0 {
                        return Ok(());
                    }
                }
            }
            #[cfg(feature = "compression-gzip")]
            Codec::Gzip {
                deflate,
                header_written,
                ..
            } => {
                if !*header_written {
                    out.extend_from_slice(&GZIP_HEADER);
                    *header_written = true;
                }
                flate(deflate, &[], out, flate2::FlushCompress::Sync)
            }
            #[cfg(feature = "compression-deflate")]
            Codec::Deflate { deflate, .. } => flate(deflate, &[], out, flate2::FlushCompress::Sync),
            #[cfg(feature = "compression-br")]
            Codec::Br(b) => brotli_op(b, &[], out, BrOp::Flush),
        }
    }

    /// Ends the stream: everything left, then the coding's trailer.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        match self {
            #[cfg(feature = "compression-zstd")]
            Codec::Zstd(e) => {
                use zstd::stream::raw::{Operation, OutBuffer};
                loop {
                    ensure_spare(out);
                    let pos = out.len();
                    let mut outb = OutBuffer::around_pos(out, pos);
                    if e.finish(&mut outb, true)? == 0 {
                        return Ok(());
                    }
                }
            }
            #[cfg(feature = "compression-gzip")]
            Codec::Gzip {
                deflate,
                crc,
                header_written,
                ..
            } => {
                if !*header_written {
                    out.extend_from_slice(&GZIP_HEADER);
                    *header_written = true;
                }
                flate(deflate, &[], out, flate2::FlushCompress::Finish)?;
                out.extend_from_slice(&crc.sum().to_le_bytes());
                out.extend_from_slice(&crc.amount().to_le_bytes());
                Ok(())
            }
            #[cfg(feature = "compression-deflate")]
            Codec::Deflate { deflate, .. } => {
                flate(deflate, &[], out, flate2::FlushCompress::Finish)
            }
            #[cfg(feature = "compression-br")]
            Codec::Br(b) => brotli_op(b, &[], out, BrOp::Finish),
        }
    }
}

/// Output scratch of the C codecs, zeroed once per thread instead of per call: they write
/// into it and `out` gets an exact copy, so no buffer carries spare capacity into a body
/// (which a cache outside may keep).
#[cfg(all(
    feature = "compression-native",
    any(
        feature = "compression-br",
        feature = "compression-gzip",
        feature = "compression-deflate"
    )
))]
mod scratch {
    use std::cell::RefCell;

    thread_local! {
        static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }

    /// Runs `f` on this thread's scratch, at least `len` bytes long; `None` during thread
    /// teardown. Bounded by the largest `len` asked for: the bound of
    /// [`WHOLE_MAX`](super::WHOLE_MAX), or 64 KiB.
    pub(super) fn with<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
        SCRATCH
            .try_with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                if scratch.len() < len {
                    scratch.resize(len, 0);
                }
                f(&mut scratch[..len])
            })
            .ok()
    }
}

/// Bodies up to this size, complete in one frame, are compressed in one call by
/// [`Codec::encode_whole`]: the input one poll of the body may encode, so a one-shot call holds
/// a worker no longer than streaming does. Beyond it libdeflate's lead over zlib-rs shrinks to
/// about 5% (1 MB page, level 5), not worth a blocking-pool hop.
///
/// libdeflate against zlib-rs, same wrapper (`compression` bench, level sweep and by hand): on
/// the bench's 10 KB JSON, level 5 makes 1302 bytes against zlib-rs's 1399 at level 6 and 1402
/// at 5, 1.0-1.2x as fast; on rustdoc's minified 91 KB script and 70 KB stylesheet 0.95-1.26x
/// zlib-rs at the same level, 0.3-0.5% larger at 5 and 0.3-0.7% smaller at 6; on small
/// bodies it is about 1.1x faster at
/// the same size (218 against 217 bytes for 512 bytes of JSON, 289 for 1 KiB either way), so
/// there is no lower bound. libdeflate has no streaming API: streams and larger bodies stay on
/// zlib-rs.
#[cfg_attr(
    not(all(
        feature = "compression-native",
        any(feature = "compression-gzip", feature = "compression-deflate")
    )),
    allow(dead_code)
)]
pub(crate) const WHOLE_MAX: usize = 256 * 1024;

#[cfg(all(
    feature = "compression-native",
    any(feature = "compression-gzip", feature = "compression-deflate")
))]
mod whole {
    use std::cell::RefCell;
    use std::io;

    /// Compressors kept per thread: one per level (a compressor is built for one level), the
    /// least recently used dropped beyond this.
    const KEPT: usize = 3;

    thread_local! {
        static COMPRESSORS: RefCell<Vec<(i32, libdeflater::Compressor)>> = const { RefCell::new(Vec::new()) };
    }

    #[derive(Clone, Copy)]
    pub(super) enum Wrapper {
        #[cfg(feature = "compression-gzip")]
        Gzip,
        #[cfg(feature = "compression-deflate")]
        Zlib,
    }

    pub(super) fn compress(
        wrapper: Wrapper,
        level: i32,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> io::Result<bool> {
        let level = level.clamp(0, 12);
        // `Ok(false)` when the thread's scratch is gone (thread teardown): the body streams.
        let run = |c: &mut libdeflater::Compressor, out: &mut Vec<u8>| -> io::Result<bool> {
            let bound = match wrapper {
                #[cfg(feature = "compression-gzip")]
                Wrapper::Gzip => c.gzip_compress_bound(input.len()),
                #[cfg(feature = "compression-deflate")]
                Wrapper::Zlib => c.zlib_compress_bound(input.len()),
            };
            let done = super::scratch::with(bound, |scratch| {
                let n = match wrapper {
                    #[cfg(feature = "compression-gzip")]
                    Wrapper::Gzip => c.gzip_compress(input, scratch),
                    #[cfg(feature = "compression-deflate")]
                    Wrapper::Zlib => c.zlib_compress(input, scratch),
                }
                .map_err(|e| io::Error::other(format!("libdeflate: {e:?}")))?;
                out.extend_from_slice(&scratch[..n]);
                Ok::<_, io::Error>(())
            });
            match done {
                Some(r) => r.map(|()| true),
                None => Ok(false),
            }
        };
        let pooled = COMPRESSORS
            .try_with(|p| {
                let mut p = p.borrow_mut();
                let i = p.iter().position(|(l, _)| *l == level)?;
                // Most recently used last.
                let entry = p.remove(i);
                Some(entry)
            })
            .ok()
            .flatten();
        let mut compressor = match pooled {
            Some((_, c)) => c,
            None => libdeflater::Compressor::new(
                libdeflater::CompressionLvl::new(level)
                    .map_err(|e| io::Error::other(format!("libdeflate level {level}: {e:?}")))?,
            ),
        };
        let r = run(&mut compressor, out);
        let _ = COMPRESSORS.try_with(|p| {
            let mut p = p.borrow_mut();
            if p.len() >= KEPT {
                p.remove(0);
            }
            p.push((level, compressor));
        });
        r
    }
}

/// gzip member header (RFC 1952): no name, no mtime, unknown OS.
#[cfg(feature = "compression-gzip")]
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

#[cfg(any(feature = "compression-gzip", feature = "compression-deflate"))]
fn flate_level(level: i32) -> flate2::Compression {
    flate2::Compression::new(level.clamp(0, 9) as u32)
}

/// Runs deflate over all of `input` with `flush`, until it has nothing more to write.
#[cfg(any(feature = "compression-gzip", feature = "compression-deflate"))]
fn flate(
    c: &mut flate2::Compress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    flush: flate2::FlushCompress,
) -> io::Result<()> {
    use flate2::{FlushCompress, Status};
    loop {
        ensure_spare(out);
        let before_in = c.total_in();
        let before_len = out.len();
        let status = c.compress_vec(input, out, flush).map_err(other)?;
        let used = usize::try_from(c.total_in() - before_in).unwrap_or(input.len());
        input = &input[used.min(input.len())..];
        let spare_left = out.capacity() > out.len();
        match (flush, status) {
            (_, Status::StreamEnd) => return Ok(()),
            (FlushCompress::None, _) if input.is_empty() => return Ok(()),
            // A flush is complete when deflate stopped short of filling the output.
            (FlushCompress::Sync, _) if input.is_empty() && spare_left => return Ok(()),
            (_, Status::BufError) if out.len() == before_len && input.is_empty() => return Ok(()),
            _ => {}
        }
    }
}

/// Brotli's window (lgwin) for a body of `size` bytes.
///
/// The window (lgwin), measured (bench `-- brotli`): 18 (256 KiB) beats the default 22 on
/// time at quality 1 (84 vs 138 us for 10 KB of JSON: less state to allocate and clear) and
/// on time and size at qualities 4-7 for a 1 MB page; below 17 brotli switches hashers and
/// qualities 5+ get 15-20x slower on small bodies, so smaller bodies keep 18 too. For
/// streams, brotli holds about two windows of input before it writes a meta-block (2 MiB
/// with a 1 MiB window, 8 MiB and more with the default), so 18 also keeps output close
/// behind input and memory small. Bodies known to be over 1 MiB get 20. The C brotli
/// measured the same way (18 slightly ahead of 22 at 10 KB, 20 at 1 MB).
#[cfg(feature = "compression-br")]
fn brotli_window(size: Option<u64>) -> u8 {
    match size {
        Some(n) if n > 1 << 20 => 20,
        _ => 18,
    }
}

#[cfg(all(feature = "compression-br", not(feature = "compression-native")))]
fn brotli(
    level: i32,
    size: Option<u64>,
) -> io::Result<Box<async_compression::codecs::BrotliEncoder>> {
    use async_compression::codecs::brotli::params::EncoderParams;
    let mut params = EncoderParams::default()
        .quality(async_compression::Level::Precise(level))
        .window_size(i32::from(brotli_window(size)));
    if let Some(size) = size {
        params = params.size_hint(usize::try_from(size).unwrap_or(usize::MAX));
    }
    Ok(Box::new(async_compression::codecs::BrotliEncoder::new(
        params,
    )))
}

/// A C brotli encoder (its state is allocated by the first input, sized by the hint).
#[cfg(all(feature = "compression-br", feature = "compression-native"))]
fn brotli(level: i32, size: Option<u64>) -> io::Result<brotlic::BrotliEncoder> {
    use brotlic::{encode::BrotliEncoderOptions, Quality, WindowSize};
    let quality = Quality::new(level.clamp(0, 11) as u8).map_err(io::Error::other)?;
    let window = WindowSize::new(brotli_window(size)).map_err(io::Error::other)?;
    let mut options = BrotliEncoderOptions::new();
    options.quality(quality).window_size(window);
    if let Some(size) = size {
        options.size_hint(u32::try_from(size).unwrap_or(u32::MAX));
    }
    options.build().map_err(io::Error::other)
}

#[cfg(feature = "compression-br")]
#[derive(Clone, Copy, PartialEq)]
enum BrOp {
    Encode,
    Flush,
    Finish,
}

/// Brotli writes into initialised memory: the spare part of `out` is zeroed, then cut back.
#[cfg(all(feature = "compression-br", not(feature = "compression-native")))]
fn brotli_op(
    b: &mut async_compression::codecs::BrotliEncoder,
    input: &[u8],
    out: &mut Vec<u8>,
    op: BrOp,
) -> io::Result<()> {
    use async_compression::codecs::Encode;
    use async_compression::core::util::PartialBuffer;
    let mut inb = PartialBuffer::new(input);
    loop {
        let start = out.len();
        let spare = (input.len() - inb.written_len()).clamp(MIN_SPARE, 64 * 1024);
        out.resize(start + spare, 0);
        let mut outb = PartialBuffer::new(&mut out[start..]);
        let done = match op {
            BrOp::Encode => {
                b.encode(&mut inb, &mut outb)?;
                inb.unwritten().is_empty()
            }
            BrOp::Flush => b.flush(&mut outb)?,
            BrOp::Finish => b.finish(&mut outb)?,
        };
        let written = outb.written_len();
        out.truncate(start + written);
        if done && (op == BrOp::Encode || written < spare) {
            return Ok(());
        }
    }
}

/// The same over the C encoder: input until all of it is taken, then (flush, finish) until the
/// encoder has nothing more to write.
#[cfg(all(feature = "compression-br", feature = "compression-native"))]
fn brotli_op(
    b: &mut brotlic::BrotliEncoder,
    mut input: &[u8],
    out: &mut Vec<u8>,
    op: BrOp,
) -> io::Result<()> {
    use brotlic::encode::BrotliOperation;
    let operation = match op {
        BrOp::Encode => BrotliOperation::Process,
        BrOp::Flush => BrotliOperation::Flush,
        BrOp::Finish => BrotliOperation::Finish,
    };
    loop {
        let spare = input.len().clamp(MIN_SPARE, 64 * 1024);
        let r = scratch::with(spare, |scratch| {
            let r = b.compress(input, scratch, operation)?;
            out.extend_from_slice(&scratch[..r.bytes_written]);
            Ok::<_, brotlic::encode::EncodeError>(r)
        })
        .ok_or_else(|| io::Error::other("brotli: thread is shutting down"))?
        .map_err(io::Error::other)?;
        input = &input[r.bytes_read..];
        if !input.is_empty() || b.has_output() {
            continue;
        }
        match op {
            BrOp::Encode | BrOp::Flush => return Ok(()),
            BrOp::Finish if b.is_finished() => return Ok(()),
            BrOp::Finish => {}
        }
    }
}

#[cfg(all(
    test,
    feature = "compression-zstd",
    feature = "compression-br",
    feature = "compression-gzip",
    feature = "compression-deflate"
))]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Read;

    pub(crate) fn decode(algorithm: Algorithm, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match algorithm {
            Algorithm::Zstd => out = zstd::stream::decode_all(data).unwrap(),
            Algorithm::Br => {
                brotli::Decompressor::new(data, 4096)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Algorithm::Gzip => {
                flate2::read::GzDecoder::new(data)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            Algorithm::Deflate => {
                flate2::read::ZlibDecoder::new(data)
                    .read_to_end(&mut out)
                    .unwrap();
            }
        }
        out
    }

    fn sample(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| b"{\"id\":1,\"name\":\"alpha\"}\n"[i % 24] ^ (i / 97 % 3) as u8)
            .collect()
    }

    fn compress(codec: &mut Codec, chunks: &[&[u8]], flush_each: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks {
            codec.encode(c, &mut out).unwrap();
            if flush_each {
                codec.flush(&mut out).unwrap();
            }
        }
        codec.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn round_trip_every_algorithm_with_reuse() {
        let data = sample(300_000);
        for a in Algorithm::ALL {
            for (i, level) in [*a.levels().start(), 3, 6].into_iter().enumerate() {
                // The second and third rounds reuse the first round's encoder.
                let mut codec = Codec::get(a, level, Some(data.len() as u64), true).unwrap();
                let out = compress(&mut codec, &[&data[..1000], &data[1000..]], false);
                assert!(out.len() < data.len() / 3, "{a} {level}: {}", out.len());
                assert_eq!(decode(a, &out), data, "{a} level {level} round {i}");
                codec.recycle();
            }
        }
    }

    #[test]
    fn whole_bodies_take_the_one_shot_path_where_there_is_one() {
        let data = sample(WHOLE_MAX);
        for a in Algorithm::ALL {
            for level in [1, 5, 9] {
                let mut codec = Codec::get(a, level, Some(data.len() as u64), true).unwrap();
                let mut out = Vec::new();
                let whole = codec.encode_whole(&data, &mut out).unwrap();
                let flate = matches!(a, Algorithm::Gzip | Algorithm::Deflate);
                assert_eq!(whole, flate && cfg!(feature = "compression-native"), "{a}");
                if whole {
                    assert!(out.len() < data.len() / 3, "{a} {level}: {}", out.len());
                    assert_eq!(decode(a, &out), data, "{a} level {level}");
                    // The codec is untouched: it still streams a body of its own.
                    let streamed = compress(&mut codec, &[b"after"], false);
                    assert_eq!(decode(a, &streamed), b"after", "{a}");
                } else {
                    assert!(out.is_empty(), "{a}");
                }
                codec.recycle();
            }
            // One byte over the bound streams.
            let big = sample(WHOLE_MAX + 1);
            let mut codec = Codec::get(a, 5, Some(big.len() as u64), true).unwrap();
            let mut out = Vec::new();
            assert!(!codec.encode_whole(&big, &mut out).unwrap(), "{a}");
            assert!(out.is_empty());
        }
    }

    #[test]
    fn abandoned_encoder_is_reset_on_reuse() {
        for a in Algorithm::ALL {
            let mut codec = Codec::get(a, 3, None, true).unwrap();
            let mut junk = Vec::new();
            codec.encode(&sample(5000), &mut junk).unwrap();
            codec.recycle();
            let mut codec = Codec::get(a, 3, None, true).unwrap();
            let out = compress(&mut codec, &[b"hello"], false);
            assert_eq!(decode(a, &out), b"hello", "{a}");
        }
    }

    /// What a streaming decoder yields before its input runs out (a truncated stream ends in
    /// an error, which is where this stops).
    fn read_available(mut d: impl Read) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(n) = d.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    #[test]
    fn flush_makes_everything_so_far_decodable() {
        for a in Algorithm::ALL {
            let mut codec = Codec::get(a, 3, None, true).unwrap();
            let mut out = Vec::new();
            codec.encode(b"data: one\n\n", &mut out).unwrap();
            codec.flush(&mut out).unwrap();
            let first = out.len();
            // A streaming decoder given only the flushed prefix yields the whole first event.
            let prefix = &out[..first];
            let got = match a {
                Algorithm::Gzip => read_available(flate2::read::GzDecoder::new(prefix)),
                Algorithm::Deflate => read_available(flate2::read::ZlibDecoder::new(prefix)),
                Algorithm::Br => read_available(brotli::Decompressor::new(prefix, 64)),
                Algorithm::Zstd => {
                    read_available(zstd::stream::read::Decoder::new(prefix).unwrap())
                }
            };
            assert_eq!(got, b"data: one\n\n", "{a}");
            codec.finish(&mut out).unwrap();
            assert_eq!(decode(a, &out), b"data: one\n\n", "{a}");
        }
    }

    #[test]
    fn empty_input() {
        for a in Algorithm::ALL {
            let mut codec = Codec::get(a, 3, Some(0), false).unwrap();
            let out = compress(&mut codec, &[], false);
            assert!(decode(a, &out).is_empty(), "{a}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn arbitrary_chunks_round_trip(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..3000), 0..6),
            flush in any::<bool>(),
            a in prop::sample::select(&Algorithm::ALL[..]),
        ) {
            let mut codec = Codec::get(a, 2, None, true).unwrap();
            let refs: Vec<&[u8]> = chunks.iter().map(|c| &c[..]).collect();
            let out = compress(&mut codec, &refs, flush);
            codec.recycle();
            prop_assert_eq!(decode(a, &out), chunks.concat());
        }
    }
}

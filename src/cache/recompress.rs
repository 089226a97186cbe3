//! Background recompression of hot entries: a stored `br` or `zstd` response that has been hit
//! often is decoded and encoded again at the highest level (Brotli quality 11, zstd 19) on the
//! blocking pool, and replaces the stored copy. Later hits send fewer bytes at no request-time
//! cost: the compression layer inside the cache chose a fast level for the first response, the
//! cache spends spare CPU on the ratio once the entry has proved it is worth it.

use std::io::Read;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, ETAG};
use http::{HeaderMap, HeaderValue};

use super::key::Primary;
use super::state::Shared;
use super::store::{Entry, EntryKey};

/// At most this many recompressions at a time: they run on the blocking pool, and the best
/// levels cost tens of milliseconds per 100 KB.
const MAX_IN_FLIGHT: usize = 2;
/// Decoded bodies larger than this are left alone (a stored entry is at most
/// `max_entry_bytes` encoded; this bounds what a decompression bomb could cost).
const MAX_DECODED: u64 = 32 * 1024 * 1024;

/// The setting and its counters.
#[derive(Debug)]
pub(crate) struct Recompress {
    /// Fresh hits after which an entry is recompressed.
    pub(crate) after_hits: u32,
    in_flight: AtomicUsize,
    pub(crate) done: AtomicU64,
    pub(crate) saved_bytes: AtomicU64,
}

impl Recompress {
    pub(crate) fn new(after_hits: u32) -> Self {
        Self {
            after_hits,
            in_flight: AtomicUsize::new(0),
            done: AtomicU64::new(0),
            saved_bytes: AtomicU64::new(0),
        }
    }
}

#[derive(Clone, Copy)]
enum Coding {
    #[cfg(feature = "compression-br")]
    Br,
    #[cfg(feature = "compression-zstd")]
    Zstd,
}

fn coding_of(headers: &HeaderMap) -> Option<Coding> {
    match headers.get(CONTENT_ENCODING)?.as_bytes() {
        #[cfg(feature = "compression-br")]
        b"br" => Some(Coding::Br),
        #[cfg(feature = "compression-zstd")]
        b"zstd" => Some(Coding::Zstd),
        _ => None,
    }
}

/// Counts a fresh hit on `entry` and, at the threshold, starts its recompression.
pub(crate) fn on_hit(shared: &Arc<Shared>, primary: Primary, entry: &Arc<Entry>) {
    let Some(r) = &shared.recompress else { return };
    // A stored part (`206`) is a slice of an encoded body: never re-encoded on its own.
    if entry.status != http::StatusCode::OK {
        return;
    }
    // Past the threshold (or recompressed already) the counter stays as it is: one load, no
    // write to a line every core reads.
    if entry.hits.load(Ordering::Relaxed) >= r.after_hits {
        return;
    }
    let hits = entry.hits.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
    if hits != r.after_hits {
        return;
    }
    let Some(coding) = coding_of(&entry.headers) else {
        return;
    };
    if r.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
        r.in_flight.fetch_sub(1, Ordering::AcqRel);
        // Busy: the next hit tries again.
        entry.hits.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        r.in_flight.fetch_sub(1, Ordering::AcqRel);
        return;
    };
    let key = EntryKey {
        primary,
        variant: shared.keyer.entry_variant(entry),
    };
    let shared = shared.clone();
    let entry = entry.clone();
    rt.spawn_blocking(move || {
        let result = recompressed(&entry, coding, shared.pages.as_ref());
        let r = shared.recompress.as_ref().expect("set");
        r.in_flight.fetch_sub(1, Ordering::AcqRel);
        let Some(better) = result else { return };
        // Only over the very entry it came from: a newer response, or a purge, wins.
        let current = shared.store.url(key.primary);
        let still_there = current
            .as_ref()
            .and_then(|u| u.variant(key.variant))
            .is_some_and(|e| Arc::ptr_eq(e, &entry));
        if !still_there {
            return;
        }
        let saved = entry.body.len().saturating_sub(better.body.len()) as u64;
        shared.store.insert(key, Arc::new(better));
        r.done.fetch_add(1, Ordering::Relaxed);
        r.saved_bytes.fetch_add(saved, Ordering::Relaxed);
    });
}

/// `input` at Brotli quality 11, 4 MiB window: Google's C brotli with `compression-native`.
#[cfg(all(feature = "compression-br", feature = "compression-native"))]
fn brotli_best(input: &[u8]) -> Option<Vec<u8>> {
    use brotlic::{CompressionMode, Quality, WindowSize};
    let quality = Quality::best();
    let mut out = vec![0u8; brotlic::compress_bound(input.len(), quality)?];
    let n = brotlic::compress(
        input,
        &mut out,
        quality,
        WindowSize::default(),
        CompressionMode::Generic,
    )
    .ok()?;
    out.truncate(n);
    Some(out)
}

/// The same with the Rust port.
#[cfg(all(feature = "compression-br", not(feature = "compression-native")))]
fn brotli_best(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() / 4);
    let params = brotli::enc::BrotliEncoderParams {
        quality: 11,
        lgwin: 22,
        size_hint: input.len(),
        ..Default::default()
    };
    brotli::BrotliCompress(&mut &input[..], &mut out, &params).ok()?;
    Some(out)
}

/// The entry with its body encoded again at the best level; `None` when it does not decode or
/// the result is not smaller.
fn recompressed(
    entry: &Entry,
    coding: Coding,
    pages: Option<&Arc<super::pages::PageBytes>>,
) -> Option<Entry> {
    let mut decoded = Vec::new();
    let body: &[u8] = &entry.body;
    let best: Vec<u8> = match coding {
        #[cfg(feature = "compression-br")]
        Coding::Br => {
            brotli::Decompressor::new(body, 4096)
                .take(MAX_DECODED)
                .read_to_end(&mut decoded)
                .ok()?;
            if decoded.len() as u64 >= MAX_DECODED {
                return None;
            }
            brotli_best(&decoded)?
        }
        #[cfg(feature = "compression-zstd")]
        Coding::Zstd => {
            zstd::stream::read::Decoder::new(body)
                .ok()?
                .take(MAX_DECODED)
                .read_to_end(&mut decoded)
                .ok()?;
            if decoded.len() as u64 >= MAX_DECODED {
                return None;
            }
            zstd::bulk::compress(&decoded, 19).ok()?
        }
    };
    if best.len() >= body.len() {
        return None;
    }
    let mut headers = entry.headers.clone();
    headers.insert(CONTENT_LENGTH, HeaderValue::from(best.len()));
    // Other bytes: a strong validator would now lie; a weak one still says "same content".
    if let Some(etag) = headers.get(ETAG) {
        if !etag.as_bytes().starts_with(b"W/") {
            let mut weak = b"W/".to_vec();
            weak.extend_from_slice(etag.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&weak) {
                headers.insert(ETAG, v);
            }
        }
    }
    Some(Entry {
        uri: entry.uri.clone(),
        status: entry.status,
        headers: super::store::stored_headers(&headers),
        // An exact copy: the encoders' buffers are sized to a bound of the input (`Bytes`
        // would keep all of it), and the store weighs an entry by its length.
        body: super::pages::body(&[&best[..]], best.len(), pages),
        vary: entry.vary.clone(),
        vary_values: entry.vary_values.clone(),
        cc: entry.cc,
        initial_age: entry.initial_age,
        stored_at: entry.stored_at,
        lifetime: entry.lifetime,
        stale_while_revalidate: entry.stale_while_revalidate,
        stale_if_error: entry.stale_if_error,
        tags: entry.tags.clone(),
        generation: entry.generation,
        fleet_generation: entry.fleet_generation,
        // Never again.
        hits: u32::MAX.into(),
    })
}

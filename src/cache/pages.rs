//! Large stored bodies in pages of their own, so that RSS follows the byte budget.
//!
//! A body of [`MIN`] bytes or more is copied into an anonymous memory mapping of its own
//! instead of the allocator's heap (with [`large_bodies_in_pages`], on by default). When its
//! entry is evicted and the last response reading it is done, the pages go back to the
//! operating system at once, whatever global allocator the application runs. On the heap, the
//! bodies a churning cache frees leave holes the allocator keeps for later (glibc's arenas,
//! mimalloc's and jemalloc's per-thread pages): the process then holds 1.2-1.5x the budget,
//! and more the smaller the budget (`examples/cache_memory.rs`, BENCHMARKS.md).
//!
//! The mappings a process holds are bounded by the kernel (`vm.max_map_count`, 65530 by
//! default on Linux), so at most [`MAX_MAPPINGS`] bodies live in pages at once, in every cache
//! of the process together; past that, or when a mapping fails, a body goes to the heap as it
//! would without the option. The store weighs a body of [`MIN`] bytes or more by its pages
//! ([`weight`]) either way.
//!
//! [`large_bodies_in_pages`]: super::ResponseCacheBuilder::large_bodies_in_pages

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use memmap2::{MmapMut, MmapOptions};

/// The smallest body kept in pages: at most a fifth of its pages is left unused (a body of
/// 16 KiB + 1 byte takes five 4 KiB pages), against the heap's holes.
pub(crate) const MIN: usize = 16 * 1024;
/// What the store counts a page as (4 KiB on x86-64 and most arm64 kernels).
const PAGE: usize = 4096;
/// Bodies in pages at once, in the whole process: half of Linux's default `vm.max_map_count`,
/// which the rest of the process (thread stacks, libraries, allocator) shares.
pub(crate) const MAX_MAPPINGS: usize = 32 * 1024;

/// Bodies in pages now, in the process.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Bytes of one cache's bodies in pages now (what its snapshot reports).
#[derive(Debug, Default)]
pub(crate) struct PageBytes(AtomicU64);

impl PageBytes {
    /// The count now.
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A mapping holding one body; dropping it unmaps its pages.
struct Mapped {
    pages: MmapMut,
    count: Arc<PageBytes>,
}

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        &self.pages
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
        self.count
            .0
            .fetch_sub(weight(self.pages.len()) as u64, Ordering::Relaxed);
    }
}

/// The body made of `chunks` (`len` bytes in all) in a buffer of its own, at its exact size:
/// in pages counted in `pages` when given and it is [`MIN`] bytes or more (and a mapping is
/// to be had), else on the heap. Never the chunks' own buffers: a body serialized into a growing buffer sits in
/// an allocation up to twice its length (a 23 KB JSON in 32 KB), which a stored slice would
/// keep whole and the weigher would not see.
pub(crate) fn body<C: AsRef<[u8]>>(
    chunks: &[C],
    len: usize,
    pages: Option<&Arc<PageBytes>>,
) -> Bytes {
    if let Some(count) = pages.filter(|_| len >= MIN) {
        if let Some(mapped) = map(chunks, len, count) {
            return mapped;
        }
    }
    match chunks {
        [] => Bytes::new(),
        [one] => Bytes::copy_from_slice(one.as_ref()),
        _ => {
            let mut buf = BytesMut::with_capacity(len);
            for c in chunks {
                buf.extend_from_slice(c.as_ref());
            }
            buf.freeze()
        }
    }
}

/// The chunks copied into a new mapping, `None` when the process holds [`MAX_MAPPINGS`]
/// already or the kernel refuses one.
fn map<C: AsRef<[u8]>>(chunks: &[C], len: usize, count: &Arc<PageBytes>) -> Option<Bytes> {
    if LIVE.fetch_add(1, Ordering::Relaxed) >= MAX_MAPPINGS {
        LIVE.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    // `populate`: the pages are made in the one system call (Linux), not one fault each.
    let Ok(mut pages) = MmapOptions::new().len(len).populate().map_anon() else {
        LIVE.fetch_sub(1, Ordering::Relaxed);
        return None;
    };
    let mut at = 0;
    for c in chunks {
        let c = c.as_ref();
        pages[at..at + c.len()].copy_from_slice(c);
        at += c.len();
    }
    debug_assert_eq!(at, len);
    count.0.fetch_add(weight(len) as u64, Ordering::Relaxed);
    Some(Bytes::from_owner(Mapped {
        pages,
        count: count.clone(),
    }))
}

/// What a body of `len` bytes costs the process, as the store counts it: whole pages from
/// [`MIN`] bytes on (in pages or not: the heap's holes cost as much), else its length.
pub(crate) fn weight(len: usize) -> usize {
    if len >= MIN {
        len.div_ceil(PAGE) * PAGE
    } else {
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(len: usize, parts: usize) -> (Vec<Bytes>, Vec<u8>) {
        let all: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let step = len.div_ceil(parts.max(1)).max(1);
        (all.chunks(step).map(Bytes::copy_from_slice).collect(), all)
    }

    /// Mappings start on a page; the heap's blocks of this size never do (the allocator's
    /// header comes first).
    fn in_pages(b: &Bytes) -> bool {
        (b.as_ptr() as usize).is_multiple_of(PAGE)
    }

    #[test]
    fn a_large_body_is_copied_whole_into_pages_that_live_as_long_as_a_slice_of_it() {
        let (parts, all) = chunks(MIN + 5000, 3);
        let count = Arc::new(PageBytes::default());
        let body = body(&parts, all.len(), Some(&count));
        assert_eq!(&body[..], &all[..]);
        assert!(in_pages(&body), "the body is in a mapping of its own");
        assert_eq!(count.get(), weight(all.len()) as u64);
        let tail = body.slice(MIN..);
        drop(body);
        assert_eq!(&tail[..], &all[MIN..]);
        assert_eq!(
            count.get(),
            weight(all.len()) as u64,
            "the slice holds the pages"
        );
        drop(tail);
        assert_eq!(count.get(), 0, "unmapped with the last reference");
    }

    #[test]
    fn small_bodies_and_the_option_off_stay_on_the_heap_at_their_exact_size() {
        let count = Arc::new(PageBytes::default());
        for (len, parts, pages) in [
            (0, 0, Some(&count)),
            (10, 1, Some(&count)),
            (MIN - 1, 4, Some(&count)),
            (MIN * 2, 2, None),
        ] {
            let (c, all) = chunks(len, parts);
            let b = body(&c, len, pages);
            assert_eq!(&b[..], &all[..]);
            assert_eq!(b.len(), len);
            assert!(len == 0 || !in_pages(&b), "{len} bytes stay on the heap");
        }
        assert_eq!(count.get(), 0);
    }

    #[test]
    fn large_bodies_weigh_whole_pages() {
        assert_eq!(weight(100), 100);
        assert_eq!(weight(MIN - 1), MIN - 1);
        assert_eq!(weight(MIN), MIN);
        assert_eq!(weight(MIN + 1), MIN + PAGE);
        assert_eq!(weight(23 * 1000), 24 * 1024);
    }
}

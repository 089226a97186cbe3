//! Does the cache's memory match its budget? Churns unique URLs of about 23 KB of identity JSON
//! through a [`PerfStack`] whose cache holds `MAX_MB` MiB, and prints, every interval, the
//! requests/s, the process's RSS and its growth since the churn began (as a multiple of the
//! budget), the heap bytes live (a counting allocator around the one measured) and the bytes
//! and entries the cache reports.
//!
//! One process: an axum server on loopback and `CONNS` clients asking `/items/{n}` with a
//! new `n` each time, so every request misses, stores, and pushes an older entry out. The
//! handler answers with axum's `Json`, whose buffer grows by doubling (a 23 KB body in a
//! 32 KB allocation), as most JSON handlers do.
//!
//! The cache keeps bodies of 16 KiB and more in pages of their own by default
//! (`large_bodies_in_pages`), outside the heap: the `pages MiB` column counts them, and
//! `PAGES=0` keeps them on the heap instead, to compare.
//!
//! This binary measures the system allocator (glibc's malloc on Linux);
//! `cache_memory_mimalloc` and `cache_memory_jemalloc` run the same code and print the same
//! table under mimalloc and jemalloc (dev-dependencies only: the crate itself picks no
//! allocator). The code is in `examples/support/cache_memory.rs`.
//!
//! ```text
//! cargo run --release --example cache_memory                   # MAX_MB=16 SECS=120
//! MAX_MB=256 SECS=600 cargo run --release --example cache_memory
//! MALLOC_ARENA_MAX=2 cargo run --release --example cache_memory # glibc with 2 arenas
//! MAX_MB=256 SECS=600 cargo run --release --example cache_memory_mimalloc
//! ```
//!
//! Environment: `MAX_MB` (16), `SECS` (120), `INTERVAL` (10 seconds), `CONNS` (32),
//! `BODY_KB` (23), `PAGES` (1: large bodies in pages of their own, the default; 0: on the
//! heap, as before 0.2), `WARMUP` (10 seconds of the same load on URLs never stored, before the
//! figures start). RSS is read from `/proc/self/statm` (Linux).

use std::alloc::System;

#[path = "support/cache_memory.rs"]
mod experiment;

#[global_allocator]
static ALLOCATOR: experiment::Counting<System> = experiment::Counting(System);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    experiment::main("system")
}

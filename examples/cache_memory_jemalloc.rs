//! `examples/cache_memory.rs` under jemalloc (the `tikv-jemallocator` crate, a dev-dependency): the same
//! churn of unique URLs through a `PerfStack` cache of `MAX_MB` MiB, the same environment and
//! the same table (requests/s, RSS growth over the budget, heap live, cache bytes), with
//! `tikv_jemallocator::Jemalloc` as the global allocator, wrapped in the same counting allocator.
//!
//! ```text
//! MAX_MB=16 SECS=120 cargo run --release --example cache_memory_jemalloc
//! MAX_MB=256 SECS=600 cargo run --release --example cache_memory_jemalloc
//! ```

#[path = "support/cache_memory.rs"]
mod experiment;

#[global_allocator]
static ALLOCATOR: experiment::Counting<tikv_jemallocator::Jemalloc> =
    experiment::Counting(tikv_jemallocator::Jemalloc);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    experiment::main("jemalloc")
}

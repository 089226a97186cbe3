//! Middleware that compresses response bodies with zstd, br, gzip or deflate, choosing the
//! coding from `Accept-Encoding` and the level from the body size and the current load.
//!
//! # What it does
//!
//! - **Negotiation** (RFC 9110 section 12.5.3): q-values, `*`, `identity;q=0`, any case and
//!   spacing, several field lines, `x-gzip`; malformed entries are ignored. Among the codings
//!   the client weighs highest, the server's [preference](AdaptiveCompressionBuilder::prefer)
//!   decides (default zstd, br, gzip, deflate). `406 Not Acceptable` only when the client
//!   accepts neither `identity` nor any coding offered, for a response that would have been
//!   compressed. The same negotiator normalises `Accept-Encoding` in the response cache's
//!   variant key, so the cache outside and this layer always agree.
//! - **Left alone**: bodies under [`min_size`](AdaptiveCompressionBuilder::min_size) (default
//!   [`DEFAULT_MIN_SIZE`]), types the [predicate](Predicate) refuses (default
//!   [`DefaultPredicate`]: text, JSON, JS, XML, SVG, wasm... but not images, audio, video,
//!   archives, woff/woff2, PDF), responses that already have a `Content-Encoding`, `206` or
//!   `Content-Range`, `Cache-Control: no-transform`, `HEAD`, `1xx`, `204`, `304`.
//! - **Levels**: three per algorithm, `fast`, `normal` and `best`
//!   ([`levels`](AdaptiveCompressionBuilder::levels)). Defaults (fast / normal / best): zstd
//!   -1 / 1 / 6, br 1 / 4 / 6, gzip and deflate 1 / 5 / 6, chosen from the level sweep of the
//!   bench (see *Performance*).
//! - **Adaptive**: the layer measures the CPU time spent in encoders over each interval
//!   against a [budget](AdaptiveCompressionBuilder::cpu_budget) (default half of the cores),
//!   and keeps a moving average of the cost (ns per input byte) of every level. Under a quarter
//!   of the budget the [`Tier`] is `idle` and bodies whose measured cost at the `best` level
//!   stays under the [cost cap](AdaptiveCompressionBuilder::large_body_cost) get it; under
//!   normal load the `normal` level, or the `fast` one for a body whose cost would exceed the cap;
//!   over three quarters of the budget, or with too many compressions in flight, the `fast`
//!   levels; over the budget (`saturated`), responses are compressed at the fast level only
//!   while the encoder time of the current interval stays under the budget, and the rest go
//!   uncompressed, except those to [`essential_with`](AdaptiveCompressionBuilder::essential_with)
//!   requests (say, high priority). The responses sent uncompressed count as demand (their
//!   length times the fast level's cost), so a saturated layer does not read its own quiet as
//!   a fall in load and flap back. Moving up a tier
//!   is immediate, moving down needs the load under a lower threshold (hysteresis), one tier per
//!   interval. The algorithm itself is never switched by load: it is what the negotiation
//!   chose, so a cache outside that keys variants on the negotiated coding stays correct.
//!   Every response is counted by coding and [`Decision`], in the [stats](CompressionHandle)
//!   and the `tower_perf_compression_responses_total{encoding,decision}` metric.
//! - **Streaming**: the body is compressed as it flows, at most 64 KiB of input per encoder
//!   call and 256 KiB per poll, compressed bytes sent every 32 KiB or whenever the inner body
//!   is not ready, so memory stays bounded whatever the body length. Server-sent events
//!   (`text/event-stream`) are flushed after each frame (one event), so every event reaches the
//!   client at once; or [excluded](EventStreams::Exclude).
//! - **Headers**: `Vary: Accept-Encoding` whenever the representation could vary (also on
//!   responses sent uncompressed because of the client's header, the load, or `HEAD`);
//!   `Content-Length` and `Accept-Ranges` removed from compressed responses; a strong `ETag`
//!   gets the coding as a suffix (`"abc"` becomes `"abc-zstd"`), so validators of different
//!   codings never match; on the way in, `If-None-Match` tags with the suffix of the coding
//!   negotiated for the request lose it, so the service (which knows only `"abc"`) can answer
//!   `304`, which then carries `"abc-zstd"` and `Vary`.
//! - **Timings**: when an outer layer put a [`Timings`](crate::Timings) record in the request
//!   (the slow-request tracker does), the encoder time of the body is appended to it as a
//!   `compression` phase when the body ends.
//! - **Speed**: zstd, gzip and deflate encoders are reset and reused from a per-thread pool
//!   instead of allocated per response; zstd is told the body length when known (smaller
//!   tables); brotli gets a window sized to the body. With the `compression-native` feature
//!   (default), `br` runs on Google's C brotli (through `brotlic`) instead of the Rust port
//!   (1.16-1.72x faster at quality 4 for the same bytes or fewer), and a `gzip` or `deflate`
//!   body that arrives whole in one frame of up to 256 KiB is compressed by libdeflate in one
//!   call (0.95-1.26x zlib-rs at the same level, 0.3-10% fewer bytes); streams stay on
//!   zlib-rs. Without the feature, all codecs but zstd are pure Rust. Compression runs on the async workers, in bounded slices,
//!   not on the blocking pool (see *Performance*).
//!
//! # Performance
//!
//! Measured with `cargo bench --bench compression` on the shared 2-core machine (figures in
//! BENCHMARKS.md, ratios from one run).
//!
//! # Example
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_perf::compression::{AdaptiveCompressionLayer, Algorithm};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Defaults: zstd, br, gzip, deflate; adaptive levels; 512-byte minimum.
//! let compression = AdaptiveCompressionLayer::new();
//!
//! // Or configured.
//! let compression = AdaptiveCompressionLayer::builder()
//!     .prefer(&[Algorithm::Br, Algorithm::Zstd, Algorithm::Gzip])
//!     .level(Algorithm::Br, 5)
//!     .min_size(512)
//!     .cpu_budget(0.25)
//!     .build()
//!     .expect("valid configuration");
//! let stats = compression.handle();
//!
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello ".repeat(1000) }))
//!     .layer(compression);
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let addr = listener.local_addr().unwrap();
//! tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
//! let res = reqwest::Client::new()
//!     .get(format!("http://{addr}/"))
//!     .header("accept-encoding", "gzip, br")
//!     .send()
//!     .await
//!     .unwrap();
//! assert_eq!(res.headers()["content-encoding"], "br");
//! assert_eq!(res.headers()["vary"], "accept-encoding");
//! let compressed = res.bytes().await.unwrap();
//! assert!(compressed.len() < 100);
//! let json = serde_json::to_string(&stats.snapshot()).unwrap();
//! # let _ = json;
//! # }
//! ```

mod adapt;
mod body;
mod builder;
mod codec;
mod future;
mod layer;
mod policy;
mod service;
mod snapshot;
mod state;

pub use adapt::{Decision, Tier};
pub use body::CompressionBody;
pub use builder::{AdaptiveCompressionBuilder, DEFAULT_MIN_SIZE};
pub use future::ResponseFuture;
pub use layer::{AdaptiveCompressionLayer, CompressionHandle};
pub use policy::{And, DefaultPredicate, EventStreams, Not, Or, Predicate};
pub use service::AdaptiveCompression;
pub use snapshot::{CompressionSnapshot, DecisionCount, EncodingSnapshot, NsPerByte};

use crate::util::accept_encoding::Encoding;

/// A content coding the layer can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// `zstd` (RFC 8878); feature `compression-zstd`.
    Zstd,
    /// `br`, Brotli (RFC 7932); feature `compression-br`.
    Br,
    /// `gzip` (RFC 1952); feature `compression-gzip`.
    Gzip,
    /// `deflate`, the zlib format (RFC 1950); feature `compression-deflate`.
    Deflate,
}

impl Algorithm {
    /// All four, in the default order of preference.
    pub const ALL: [Algorithm; 4] = [
        Algorithm::Zstd,
        Algorithm::Br,
        Algorithm::Gzip,
        Algorithm::Deflate,
    ];

    /// The content-coding name.
    pub fn as_str(self) -> &'static str {
        self.encoding().as_str()
    }

    /// Whether its feature is compiled in.
    pub fn is_enabled(self) -> bool {
        match self {
            Algorithm::Zstd => cfg!(feature = "compression-zstd"),
            Algorithm::Br => cfg!(feature = "compression-br"),
            Algorithm::Gzip => cfg!(feature = "compression-gzip"),
            Algorithm::Deflate => cfg!(feature = "compression-deflate"),
        }
    }

    /// The valid levels.
    pub fn levels(self) -> std::ops::RangeInclusive<i32> {
        match self {
            Algorithm::Zstd => -7..=22,
            Algorithm::Br => 0..=11,
            Algorithm::Gzip | Algorithm::Deflate => 1..=9,
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn feature_suffix(self) -> &'static str {
        match self {
            Algorithm::Zstd => "zstd",
            Algorithm::Br => "br",
            Algorithm::Gzip => "gzip",
            Algorithm::Deflate => "deflate",
        }
    }

    pub(crate) fn encoding(self) -> Encoding {
        match self {
            Algorithm::Zstd => Encoding::Zstd,
            Algorithm::Br => Encoding::Br,
            Algorithm::Gzip => Encoding::Gzip,
            Algorithm::Deflate => Encoding::Deflate,
        }
    }

    pub(crate) fn from_encoding(e: Encoding) -> Option<Algorithm> {
        match e {
            Encoding::Zstd => Some(Algorithm::Zstd),
            Encoding::Br => Some(Algorithm::Br),
            Encoding::Gzip => Some(Algorithm::Gzip),
            Encoding::Deflate => Some(Algorithm::Deflate),
            Encoding::Identity => None,
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

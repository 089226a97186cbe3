//! The Redis tier: what a Redis hit costs against a bare fred `GET` of the same bytes, and the
//! throughput of two instances sharing one Redis, in one run against a real `redis-server`
//! started here on a free loopback port (skipped with a message when it is not installed).
//!
//! Run with `cargo bench --bench cache_redis --features redis`.

#[path = "../tests/common/redis.rs"]
#[allow(dead_code)]
mod redis_server;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fred::interfaces::{ClientLike, KeysInterface};
use futures_util::future::join_all;
use http::{header, HeaderValue, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use tower::{service_fn, Layer, ServiceExt};
use tower_perf::cache::{CacheHandle, ResponseCacheLayer};
use tower_perf::redis::RedisLink;

/// How many distinct URLs the Redis-hit benchmarks cycle through.
const URLS: usize = 256;

/// A 20 KB JSON-like body, the size of one page of the demo's list.
fn body() -> Bytes {
    let mut s = String::with_capacity(20_500);
    s.push('[');
    let mut i = 0u32;
    while s.len() < 20_000 {
        s.push_str(&format!(
            "{{\"id\":{i},\"v\":\"{:08x}\"}},",
            i.wrapping_mul(2_654_435_761)
        ));
        i += 1;
    }
    s.push(']');
    Bytes::from(s)
}

type Svc = tower::util::BoxCloneService<Request<Full<Bytes>>, Response<Bytes>, Infallible>;

/// One instance: a cache layer (memory tier of `memory_bytes`, Redis tier when `link`) over an
/// origin that returns `body`, cacheable for 10 minutes.
fn instance(body: Bytes, memory_bytes: u64, link: Option<RedisLink>) -> (Svc, CacheHandle) {
    let origin = service_fn(move |_req: Request<Full<Bytes>>| {
        let body = body.clone();
        async move {
            let mut res = Response::new(Full::new(body));
            res.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=600"),
            );
            Ok::<_, Infallible>(res)
        }
    });
    let mut builder = ResponseCacheLayer::builder()
        .max_bytes(memory_bytes)
        .max_entry_bytes((memory_bytes / 2).min(64 * 1024) as usize);
    if let Some(link) = link {
        builder = builder.redis(link);
    }
    let layer = builder.build().expect("cache");
    let handle = layer.handle();
    let svc = layer.layer(origin).map_response(|res| {
        let (parts, body) = res.into_parts();
        // The body of a hit is ready at once; the collect is the client reading it.
        let bytes = futures_util::FutureExt::now_or_never(body.collect())
            .and_then(Result::ok)
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Response::from_parts(parts, bytes)
    });
    (tower::util::BoxCloneService::new(svc), handle)
}

fn request(uri: &Uri) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::default());
    *req.uri_mut() = uri.clone();
    req.headers_mut()
        .insert(header::HOST, HeaderValue::from_static("bench.local"));
    req
}

async fn call(svc: &Svc, uri: &Uri) -> usize {
    let res = svc
        .clone()
        .oneshot(request(uri))
        .await
        .unwrap_or_else(|e| match e {});
    res.body().len()
}

fn link(url: &str) -> RedisLink {
    RedisLink::builder()
        .url(url)
        .deadline(Duration::from_millis(200))
        .build()
        .expect("link")
}

fn bench(c: &mut Criterion) {
    let Some(server) = redis_server::RedisServer::try_start() else {
        eprintln!("cache_redis bench skipped: redis-server is not installed (scripts/test.sh installs it)");
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let body = body();
    let uris: Vec<Uri> = (0..URLS)
        .map(|i| format!("/api/v1/properties?page={i}").parse().unwrap())
        .collect();

    // Instance A stores every URL in Redis.
    let (a, ha) = instance(body.clone(), 64 << 20, Some(link(&server.url())));
    rt.block_on(async {
        for uri in &uris {
            call(&a, uri).await;
        }
        while ha.snapshot().redis.map_or(0, |r| r.stores) < URLS as u64 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    // Instance B's memory tier holds about two entries: nearly every request is a Redis hit.
    let (b, hb) = instance(body.clone(), 48 * 1024, Some(link(&server.url())));
    let (c2, _) = instance(body.clone(), 48 * 1024, Some(link(&server.url())));
    // The same bytes as one stored entry, fetched with a bare fred client.
    let key = server
        .keys("*:e:*")
        .into_iter()
        .find(|k| !k.ends_with(":v") && !k.ends_with(":lease"))
        .expect("an entry key");
    let fred_client = rt.block_on(async {
        let config = fred::types::config::Config::from_url(&server.url()).expect("url");
        let client = fred::types::Builder::from_config(config)
            .build()
            .expect("client");
        client.init().await.expect("connect");
        client
    });

    let mut g = c.benchmark_group("redis_tier");
    g.measurement_time(Duration::from_secs(5));
    let mut i = 0usize;
    g.bench_function("hit through the cache (memory misses)", |bn| {
        bn.to_async(&rt).iter(|| {
            i = (i + 1) % URLS;
            let uri = uris[i].clone();
            let b = b.clone();
            async move { call(&b, &uri).await }
        })
    });
    g.bench_function("bare fred GET of the same bytes", |bn| {
        bn.to_async(&rt).iter(|| {
            let client = fred_client.clone();
            let key = key.clone();
            async move { client.get::<Bytes, _>(key).await.expect("GET").len() }
        })
    });
    let (m, _) = instance(body.clone(), 64 << 20, None);
    rt.block_on(call(&m, &uris[0]));
    g.bench_function("memory hit (reference)", |bn| {
        bn.to_async(&rt).iter(|| {
            let m = m.clone();
            let uri = uris[0].clone();
            async move { call(&m, &uri).await }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("two_instances");
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(64));
    let mut j = 0usize;
    g.bench_function(
        "64 concurrent requests over two instances, Redis hits",
        |bn| {
            bn.to_async(&rt).iter(|| {
                j = (j + 64) % URLS;
                let calls: Vec<_> = (0..64)
                    .map(|k| {
                        let svc = if k % 2 == 0 { b.clone() } else { c2.clone() };
                        let uri = uris[(j + k) % URLS].clone();
                        async move { call(&svc, &uri).await }
                    })
                    .collect();
                join_all(calls)
            })
        },
    );
    g.finish();
    let stats = hb.snapshot().redis.expect("redis tier");
    eprintln!(
        "instance B: {} Redis hits, {} misses, {} errors",
        stats.hits, stats.misses, stats.errors
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);

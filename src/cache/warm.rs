//! Filling the cache ahead of traffic: [`CacheHandle::warm`](super::CacheHandle::warm).

use super::layer::CacheHandle;
use super::request::call_ready;
use super::snapshot::WarmReport;

enum Warmed {
    Stored,
    Hit,
    NotStored,
    Failed,
}

/// Reads this cache's member of `Cache-Status` to tell what happened to a warm-up request.
fn warmed(name: &str, headers: &http::HeaderMap) -> Warmed {
    for value in headers.get_all(super::status::CACHE_STATUS.clone()) {
        let Ok(value) = value.to_str() else { continue };
        // Ours is the last member naming this cache.
        if let Some(member) = value
            .split(',')
            .map(str::trim)
            .rfind(|m| m.split(';').next().map(str::trim) == Some(name))
        {
            let params: Vec<&str> = member.split(';').map(str::trim).collect();
            return if params.contains(&"stored") {
                Warmed::Stored
            } else if params.contains(&"hit") {
                Warmed::Hit
            } else {
                Warmed::NotStored
            };
        }
    }
    Warmed::NotStored
}

impl CacheHandle {
    /// Fills the cache by sending `requests` through `service` (usually the whole application,
    /// this cache included, so that responses are stored the normal way), at most `concurrency`
    /// at a time, and reading every body to its end. Needs a tokio runtime.
    ///
    /// The cache key includes the authority (unless
    /// [`ignore_host`](super::ResponseCacheBuilder::ignore_host)), so give each request the `Host`
    /// header your clients send (for example `api.example.com`), or the warmed entries will not
    /// be theirs.
    ///
    /// ```
    /// # async fn warm_up(app: axum::Router, cache: tower_perf::cache::CacheHandle) {
    /// let pages = (1..=5).map(|p| {
    ///     http::Request::get(format!("/api/items?page={p}"))
    ///         .header("host", "api.example.com")
    ///         .body(axum::body::Body::empty())
    ///         .unwrap()
    /// });
    /// let report = cache.warm(app, pages, 4).await;
    /// println!("warmed {} of {}", report.stored + report.already_cached, report.requested);
    /// # }
    /// ```
    pub async fn warm<S, I, ReqBody, ResBody>(
        &self,
        service: S,
        requests: I,
        concurrency: usize,
    ) -> WarmReport
    where
        S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        I: IntoIterator<Item = http::Request<ReqBody>>,
        ReqBody: Send + 'static,
        ResBody: http_body::Body + Send + 'static,
        ResBody::Data: Send,
    {
        let concurrency = concurrency.max(1);
        let name = self.shared.name.clone();
        let mut report = WarmReport::default();
        let mut tasks = tokio::task::JoinSet::new();
        let tally =
            |report: &mut WarmReport, done: Result<Warmed, tokio::task::JoinError>| match done {
                Ok(Warmed::Stored) => report.stored += 1,
                Ok(Warmed::Hit) => report.already_cached += 1,
                Ok(Warmed::NotStored) => report.not_stored += 1,
                Ok(Warmed::Failed) | Err(_) => report.failed += 1,
            };
        for req in requests {
            report.requested += 1;
            while tasks.len() >= concurrency {
                if let Some(done) = tasks.join_next().await {
                    tally(&mut report, done);
                }
            }
            let mut svc = service.clone();
            let name = name.clone();
            tasks.spawn(async move {
                let Ok(res) = call_ready(&mut svc, req).await else {
                    return Warmed::Failed;
                };
                let outcome = warmed(&name, res.headers());
                let mut body = std::pin::pin!(res.into_body());
                while let Some(frame) =
                    std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await
                {
                    if frame.is_err() {
                        return Warmed::Failed;
                    }
                }
                outcome
            });
        }
        while let Some(done) = tasks.join_next().await {
            tally(&mut report, done);
        }
        report
    }
}

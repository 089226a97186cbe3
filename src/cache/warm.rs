//! Filling the cache ahead of traffic: [`CacheHandle::warm`](super::CacheHandle::warm).

use super::request::call_ready;
use super::snapshot::WarmReport;
use super::state::Shared;

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

/// Sends `requests` through `service`, at most `concurrency` at a time, reading every body, and
/// counts what this cache did with each.
pub(crate) async fn warm<S, I, ReqBody, ResBody>(
    shared: &Shared,
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
    let name = shared.name.clone();
    let mut report = WarmReport::default();
    let mut tasks = tokio::task::JoinSet::new();
    let tally = |report: &mut WarmReport, done: Result<Warmed, tokio::task::JoinError>| match done {
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
            while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
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

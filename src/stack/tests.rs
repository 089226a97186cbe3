//! Unit tests of the configuration: keys in errors, defaults, serde round trips.

use super::layers::{keyed, route_of_key, QUEUE_KEYS};
use super::*;
use crate::Priority;

#[test]
fn the_default_configuration_builds() {
    let stack = PerfStack::builder().build().expect("defaults");
    let _ = stack.handles();
}

/// Without a codec the compression section is read but must keep its defaults.
#[cfg(not(any(
    feature = "compression-zstd",
    feature = "compression-br",
    feature = "compression-gzip",
    feature = "compression-deflate"
)))]
#[test]
fn without_a_codec_a_compression_setting_is_refused() {
    let mut config = PerfConfig::default();
    assert!(PerfStack::from_config(&config).is_ok());
    config.compression.min_size = 1;
    let err = PerfStack::from_config(&config).expect_err("refused");
    assert_eq!(err.field(), "compression");
    assert!(err.reason().contains("feature"), "{err}");
}

/// The key of the error when `config` is refused.
fn refused_key(config: &PerfConfig) -> &'static str {
    PerfStack::from_config(config).expect_err("refused").field()
}

#[test]
fn builder_errors_are_renamed_after_the_configuration_key() {
    let mut config = PerfConfig::default();
    config.slow.slow_log_capacity = 1_000_000;
    assert_eq!(refused_key(&config), "slow.slow_log_capacity");

    let mut config = PerfConfig::default();
    config.queue.queue_capacity = 0;
    assert_eq!(refused_key(&config), "queue.queue_capacity");

    let mut config = PerfConfig::default();
    config.breaker.minimum_calls = 0;
    assert_eq!(refused_key(&config), "breaker.minimum_calls");

    let mut config = PerfConfig::default();
    config.cache.default_ttl_secs = Some(0);
    assert_eq!(refused_key(&config), "cache.default_ttl_secs");
}

#[test]
fn a_field_without_a_key_is_named_after_its_section() {
    let rename = keyed("queue", QUEUE_KEYS);
    let err = rename(ConfigError::new("codel", "too short"));
    assert_eq!(err.field(), "queue");
    assert_eq!(err.reason(), "too short");
}

#[test]
fn every_section_reads_from_toml_with_its_defaults() {
    let config: PerfConfig = toml::from_str(
        r#"
        [slow]
        threshold_ms = 250
        route_threshold_ms = { "/export" = 60000, "/reports/*" = 30000 }
        [rate_limit]
        per_second = 100
        burst = 200
        name = "api"
        path_prefixes = ["/api/"]
        [cache]
        route_ttl_secs = { "/api/v1/dashboard" = 5, "/api/v1/properties*" = 60 }
        [queue]
        route_priority = { "/api/v1/payments*" = "critical", "/export" = "low" }
        max_wait_ms = { low = 500 }
        adaptive = { algorithm = "aimd", max = 64 }
        [breaker]
        slow_call_ms = 800
        call_timeout_ms = 2000
        "#,
    )
    .expect("valid TOML");
    assert_eq!(config.queue.route_priority["/export"], Priority::Low);
    assert_eq!(config.queue.max_wait_ms.low, 500);
    assert_eq!(config.queue.max_wait_ms.normal, 1000, "the default");
    assert_eq!(config.queue.adaptive.algorithm, AdaptiveAlgorithm::Aimd);
    assert_eq!(config.queue.adaptive.initial, 20, "the default");
    assert_eq!(config.breaker.slow_call_rate, 1.0, "the default");
    let stack = PerfStack::from_config(&config).expect("valid configuration");
    assert_eq!(stack.handles().queue.snapshot().limit, 20);
}

#[test]
fn a_bad_priority_or_field_is_refused_when_read() {
    let err = toml::from_str::<PerfConfig>("[queue]\nroute_priority = { \"/a\" = \"urgent\" }")
        .expect_err("no such class");
    assert!(err.to_string().contains("urgent"), "{err}");
    let err = toml::from_str::<PerfConfig>("[queue.max_wait_ms]\nlowest = 1").expect_err("typo");
    assert!(err.to_string().contains("lowest"), "{err}");
}

#[test]
fn per_route_keys_ending_in_a_star_are_prefixes() {
    let route = route_of_key("/api/v1/payments/*");
    assert!(route.is_prefix());
    assert!(route.matches("/api/v1/payments/{id}/status"));
    assert!(!route_of_key("/api/v1/dashboard").is_prefix());
}

#[test]
fn new_fields_are_named_by_their_keys() {
    let refused = |toml: &str| {
        let config: PerfConfig = toml::from_str(toml).expect("valid TOML");
        refused_key(&config)
    };
    assert_eq!(refused("[queue.max_wait_ms]\nlow = 0"), "queue.max_wait_ms");
    assert_eq!(refused("[queue.adaptive]\nmin = 0"), "queue.adaptive");
    assert_eq!(
        refused("[breaker]\nmax_open_wait_secs = 1"),
        "breaker.max_open_wait_secs"
    );
    assert_eq!(
        refused("[breaker]\nwindow_calls = 10"),
        "breaker.minimum_calls"
    );
    assert_eq!(
        refused("[slow.route_threshold_ms]\n\"/a\" = 0"),
        "slow.route_threshold_ms"
    );
    assert_eq!(
        refused("[rate_limit]\nper_second = 1\nname = \"a b\""),
        "rate_limit.name"
    );
    assert_eq!(
        refused("[rate_limit]\nper_second = 1\ntrusted_proxies = [\"nope\"]"),
        "rate_limit.trusted_proxies"
    );
    #[cfg(feature = "compression-gzip")]
    assert_eq!(
        refused("[compression]\nprefer = [\"lzma\"]"),
        "compression.prefer"
    );
}

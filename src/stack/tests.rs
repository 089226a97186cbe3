//! Unit tests of the configuration: keys in errors, defaults, serde round trips.

use super::layers::{keyed, QUEUE_KEYS};
use super::*;

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

//! Unit tests of the configuration: keys in errors, defaults, serde round trips.

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

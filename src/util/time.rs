//! Durations as the crate shows them: whole seconds for `Retry-After`, milliseconds in JSON.

use std::time::Duration;

use serde::Serializer;

/// Whole seconds, rounded up: `Retry-After` (and the `t` of `RateLimit`) must never invite a
/// client back before there is room.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Milliseconds to the microsecond, computed so that they print short (`0.045`, not
/// `0.045000000000000005`).
pub(crate) fn to_millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1e3
}

/// `serialize_with` for a `Duration` shown as fractional milliseconds.
pub(crate) fn serialize_millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(to_millis(*d))
}

/// `serialize_with` for an optional `Duration` shown as fractional milliseconds.
pub(crate) fn serialize_opt_millis<S: Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => serialize_millis(d, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_nanos(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
        assert_eq!(to_millis(Duration::from_micros(45)), 0.045);
    }
}

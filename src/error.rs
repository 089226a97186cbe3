//! Errors shared by every layer of the crate.

use std::borrow::Cow;
use std::fmt;

/// A layer was configured with a value it cannot work with.
///
/// Returned by the `build()` method of each layer's builder, so bad configuration fails when the
/// layer is built, never while it serves requests. [`field`](ConfigError::field) names the
/// offending builder method, so the message points at the line to fix.
///
/// ```
/// use std::time::Duration;
/// use tower_perf::slow::SlowRequestLayer;
///
/// let err = SlowRequestLayer::builder()
///     .window(Duration::ZERO, 6)
///     .build()
///     .unwrap_err();
/// assert_eq!(err.field(), "window");
/// assert!(err.to_string().contains("window"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    reason: Cow<'static, str>,
}

impl ConfigError {
    /// A new error for `field`, explained by `reason`.
    pub fn new(field: &'static str, reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }

    /// The configuration field (builder method) that holds the bad value.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// Why the value was refused.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid `{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// The error type of response bodies produced by the layers of this crate.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

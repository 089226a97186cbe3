//! Bounded labels for request methods.

use http::Method;

/// Number of method classes: the nine standard methods and `_OTHER`.
pub(crate) const METHOD_CLASSES: usize = 10;

/// Index of `method` among [`METHOD_CLASSES`]: extension methods share the last slot, so a client
/// sending made-up methods cannot grow the number of label sets.
pub(crate) fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::CONNECT => 5,
        Method::OPTIONS => 6,
        Method::TRACE => 7,
        Method::PATCH => 8,
        _ => 9,
    }
}

/// The label value for a method index, as OpenTelemetry names it (`_OTHER` for the rest).
pub(crate) fn method_label(index: usize) -> &'static str {
    const LABELS: [&str; METHOD_CLASSES] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "_OTHER",
    ];
    LABELS[index.min(METHOD_CLASSES - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_and_other() {
        assert_eq!(method_label(method_index(&Method::GET)), "GET");
        assert_eq!(method_label(method_index(&Method::PATCH)), "PATCH");
        let custom = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(method_label(method_index(&custom)), "_OTHER");
    }
}

//! The `Server-Timing` header the tracker adds to responses.

use std::time::Duration;

use http::header::HeaderName;
use http::HeaderValue;

use crate::timings::{is_token, Timings};
use crate::util::buf::StackBuf;

/// Room for the header of a request through the whole stack, on the stack.
type Buf = StackBuf<256>;

/// `Server-Timing`.
pub(crate) static SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// `Server-Timing: <phase>;dur=<ms>, ..., total;dur=<ms>` (W3C Server Timing syntax), with
/// durations in milliseconds to the microsecond.
pub(crate) fn server_timing(timings: &Timings, total: Duration) -> Option<HeaderValue> {
    // Built on the stack, then copied once into the header value: one exact-size allocation.
    // (A `Vec` with spare capacity would cost a second one when turned into `Bytes`.)
    let mut value = Buf::new();
    timings.for_each(|p| {
        // `total` is the tracker's own entry: a phase of that name would make two.
        if is_token(p.name()) && !p.name().eq_ignore_ascii_case("total") {
            value.push(p.name().as_bytes());
            value.push(b";dur=");
            push_millis(&mut value, p.duration());
            value.push(b", ");
        }
    });
    value.push(b"total;dur=");
    push_millis(&mut value, total);
    value.to_header_value()
}

/// Appends `d` as milliseconds with three decimals (`12.345`), with integer arithmetic: float
/// formatting was the largest single cost of the header.
fn push_millis(out: &mut Buf, d: Duration) {
    let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    push_u64(out, micros / 1000);
    let frac = micros % 1000;
    out.push(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

fn push_u64(out: &mut Buf, n: u64) {
    out.push_int(n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_timing_format() {
        let t = Timings::new();
        t.record("cache", Duration::from_micros(250));
        t.record("not a token", Duration::from_millis(1));
        t.record("app", Duration::from_millis(12));
        t.record("Total", Duration::from_millis(3));
        let v = server_timing(&t, Duration::from_micros(12_500)).unwrap();
        assert_eq!(v, "cache;dur=0.250, app;dur=12.000, total;dur=12.500");
        let empty = server_timing(&Timings::new(), Duration::ZERO).unwrap();
        assert_eq!(empty, "total;dur=0.000");
        let long = server_timing(&Timings::new(), Duration::from_secs(86_400)).unwrap();
        assert_eq!(long, "total;dur=86400000.000");
        let mut v = Buf::new();
        push_millis(&mut v, Duration::from_nanos(1_234_567_891));
        assert_eq!(v.as_bytes(), b"1234.567");
        // Past the stack buffer, the header spills to the heap intact.
        let many = Timings::new();
        for i in 0..16 {
            many.record(format!("phase-number-{i}"), Duration::from_millis(i));
        }
        let v = server_timing(&many, Duration::from_secs(1)).unwrap();
        assert!(v.len() > 256);
        assert!(v
            .to_str()
            .unwrap()
            .starts_with("phase-number-0;dur=0.000, phase-number-1;dur=1.000"));
        assert!(v
            .to_str()
            .unwrap()
            .ends_with("phase-number-15;dur=15.000, total;dur=1000.000"));
    }
}

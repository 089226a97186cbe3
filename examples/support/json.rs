//! The JSON list of properties that the compression bench and `compression_server` serve:
//! one generator, so both measure the same document.

use std::fmt::Write as _;

/// A JSON array of property objects, at least `len` bytes long.
pub fn properties(len: usize) -> String {
    let mut s = String::with_capacity(len + 200);
    s.push('[');
    let mut i = 0usize;
    while s.len() < len {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            "{{\"id\":{i},\"name\":\"Property {i}\",\"city\":\"{}\",\"status\":\"{}\",\"monthly_rent\":{},\"updated\":\"2026-11-{:02}T10:{:02}:00Z\"}}",
            ["Lisbon", "Porto", "Braga", "Faro", "Coimbra"][i % 5],
            ["active", "vacant", "maintenance"][i % 3],
            900 + (i * 37) % 1100,
            1 + i % 28,
            i % 60
        );
        i += 1;
    }
    s.push(']');
    s
}

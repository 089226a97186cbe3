//! A byte buffer for header values built per request: on the stack up to its size, copied
//! once into the value's exact-size allocation.

use http::HeaderValue;

/// A byte buffer that lives on the stack up to `N` bytes and spills to the heap past that.
///
/// Header values are built here, then copied once into their own allocation
/// ([`StackBuf::to_header_value`]); a `Vec` with spare capacity would cost a second allocation
/// when turned into `Bytes`.
pub(crate) struct StackBuf<const N: usize> {
    stack: [u8; N],
    len: usize,
    heap: Vec<u8>,
}

impl<const N: usize> StackBuf<N> {
    pub(crate) fn new() -> Self {
        Self {
            stack: [0; N],
            len: 0,
            heap: Vec::new(),
        }
    }

    /// Appends `bytes`.
    #[inline(always)]
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        if end <= N && self.heap.is_empty() {
            self.stack[self.len..end].copy_from_slice(bytes);
            self.len = end;
        } else {
            self.spill(bytes);
        }
    }

    /// Appends `bytes` on the heap, moving what the stack holds there first.
    #[cold]
    #[inline(never)]
    fn spill(&mut self, bytes: &[u8]) {
        if self.heap.is_empty() {
            self.heap.reserve(2 * N);
            self.heap.extend_from_slice(&self.stack[..self.len]);
        }
        self.heap.extend_from_slice(bytes);
    }

    /// Appends one byte.
    #[inline(always)]
    pub(crate) fn push_byte(&mut self, byte: u8) {
        self.push(&[byte]);
    }

    /// Appends `n` in decimal, without going through `fmt`.
    #[inline]
    pub(crate) fn push_int(&mut self, n: impl itoa::Integer) {
        self.push(itoa::Buffer::new().format(n).as_bytes());
    }

    /// What was written.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        if self.heap.is_empty() {
            &self.stack[..self.len]
        } else {
            &self.heap
        }
    }

    /// The bytes as a header value, or `None` when they are not a valid one.
    pub(crate) fn to_header_value(&self) -> Option<HeaderValue> {
        HeaderValue::from_bytes(self.as_bytes()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::StackBuf;

    #[test]
    fn spills_to_the_heap_intact() {
        let mut b = StackBuf::<8>::new();
        b.push(b"abc");
        b.push_int(-42i64);
        assert_eq!(b.as_bytes(), b"abc-42");
        b.push(b"defgh");
        b.push_byte(b'!');
        assert_eq!(b.as_bytes(), b"abc-42defgh!");
        assert_eq!(b.to_header_value().unwrap(), "abc-42defgh!");
        b.push(b"\n");
        assert!(b.to_header_value().is_none());
    }
}

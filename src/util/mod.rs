//! Helpers shared by the layers. One place, never copied into a layer.

pub(crate) mod accept_encoding;
pub(crate) mod body;
pub(crate) mod buf;
pub(crate) mod event_limiter;
pub(crate) mod header;
pub(crate) mod macros;
pub(crate) mod method;
pub(crate) mod request;
pub(crate) mod time;

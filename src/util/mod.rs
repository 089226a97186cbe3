//! Helpers shared by the layers. One place, never copied into a layer.

pub(crate) mod method;
pub(crate) mod request;

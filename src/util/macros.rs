//! Plumbing every middleware needs, written once (as tower-http's `macros.rs` does).

/// `get_ref`, `get_mut` and `into_inner` for a service whose inner service is the field `inner`
/// of type `S`. Used inside `impl<S> Foo<S> { ... }`.
macro_rules! define_inner_service_accessors {
    () => {
        /// The inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// The inner service, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// Consumes `self`, returning the inner service.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}

/// `is_end_stream` and `size_hint` of a body wrapper that leaves its inner body's framing
/// unchanged: both are the inner body's (the field named by the argument). Used inside
/// `impl<B: Body> Body for Wrapper<B> { ... }`.
macro_rules! forward_body_hints {
    ($field:ident) => {
        fn is_end_stream(&self) -> bool {
            http_body::Body::is_end_stream(&self.$field)
        }

        fn size_hint(&self) -> http_body::SizeHint {
            http_body::Body::size_hint(&self.$field)
        }
    };
}

/// `Body` and `Debug` for a public body wrapper `$name<B>` whose only field, `inner`, is a
/// pinned `util::body::InnerOrBytes<B>` (the inner body, or the layer's own answer): every call
/// forwarded. Used after the `pin_project!` of the wrapper.
macro_rules! inner_or_bytes_body {
    ($name:ident) => {
        impl<B> http_body::Body for $name<B>
        where
            B: http_body::Body,
            B::Data: From<bytes::Bytes>,
        {
            type Data = B::Data;
            type Error = B::Error;

            fn poll_frame(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
                self.project().inner.poll_frame(cx)
            }

            $crate::util::macros::forward_body_hints!(inner);
        }

        impl<B> std::fmt::Debug for $name<B> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("kind", &self.inner.kind())
                    .finish()
            }
        }
    };
}

pub(crate) use define_inner_service_accessors;
pub(crate) use forward_body_hints;
pub(crate) use inner_or_bytes_body;

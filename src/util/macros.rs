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

pub(crate) use define_inner_service_accessors;
pub(crate) use forward_body_hints;

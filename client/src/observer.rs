//! What a registry client reports as it works: answers by status, bytes received,
//! failures. The mirror counts them in its Prometheus metrics; the builder does not
//! count them ([`Unobserved`]).

/// Told of every request a client makes. Each method has a do-nothing default.
pub trait Observer: Send + Sync {
    /// `host` answered with `status`.
    fn request(&self, _host: &str, _status: u16) {}
    /// `bytes` of a body came from `host`.
    fn received(&self, _host: &str, _bytes: u64) {}
    /// A request to `host` failed without an answer (connection, reset, timeout).
    fn error(&self, _host: &str) {}
}

/// An observer that notes nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unobserved;

impl Observer for Unobserved {}

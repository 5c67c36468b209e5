//! Talking to upstream registries and routing mirror requests.
//!
//! Planned (issue 3): token auth, redirects and retries toward upstreams, mirror routing
//! (`?ns=`, path prefixes, the docker.io default), streaming cache fill and client
//! mirror-config generation. Nothing is implemented here yet.

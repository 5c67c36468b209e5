//! The registry on S3-compatible object storage: every feature on a real Garage, the
//! conditional-write paths on moto, and replicas sharing one bucket.

mod basics;
mod mirror;
mod replicas;
mod store;
mod uploads;

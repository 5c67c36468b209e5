//! The registry on S3-compatible object storage: every feature on a real Garage, the
//! conditional-write paths on moto, and replicas sharing one bucket.

mod basics;
mod uploads;
mod store;
mod mirror;
mod replicas;

//! The installer against real hosts: sshd test hosts on loopback addresses, each with
//! its own mount namespace (`harness/hosts.rs`).

mod distribute;
mod hostile;
mod hosts;
mod run;

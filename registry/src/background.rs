//! Work that should use only the CPU time requests leave (verifying bundles, hashing
//! cache fills).

/// Puts the calling thread in the idle scheduling class: it runs only when no other
/// thread wants the CPU.
pub fn make_this_thread_idle() {
    // SAFETY: pid 0 is the calling thread; SCHED_IDLE takes a zero priority and only
    // changes when the thread gets a CPU.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
    }
}

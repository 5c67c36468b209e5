//! Progress reporting. The library says what is happening; the command line draws it
//! (indicatif bars, or nothing with `--quiet`).

/// One piece of work with a known size, such as a blob transfer.
pub trait Task: Send + Sync {
    fn advance(&self, bytes: u64);
    /// Done; `note` says how (e.g. "exists", "mounted", "done").
    fn finish(&self, note: &str);
}

pub trait Progress: Send + Sync {
    fn task(&self, label: &str, total: u64) -> Box<dyn Task>;
    /// A line of status text.
    fn message(&self, text: &str);
}

/// Reports nothing.
pub struct Quiet;

struct NoTask;

impl Task for NoTask {
    fn advance(&self, _: u64) {}
    fn finish(&self, _: &str) {}
}

impl Progress for Quiet {
    fn task(&self, _: &str, _: u64) -> Box<dyn Task> {
        Box::new(NoTask)
    }
    fn message(&self, _: &str) {}
}

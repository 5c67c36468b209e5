//! Progress bars (indicatif) for the library's progress events; nothing with `--quiet`.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sealer_builder::progress::{Progress, Quiet, Task};

pub struct Bars {
    multi: MultiProgress,
}

struct Bar(ProgressBar);

impl Task for Bar {
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn finish(&self, note: &str) {
        self.0.set_message(note.to_string());
        self.0.finish();
    }
}

impl Progress for Bars {
    fn task(&self, label: &str, total: u64) -> Box<dyn Task> {
        let bar = self.multi.add(ProgressBar::new(total));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {binary_bytes:>10}/{binary_total_bytes:<10} {binary_bytes_per_sec:>12} {msg}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        Box::new(Bar(bar))
    }

    fn message(&self, text: &str) {
        // Without a terminal the bars are hidden and so would be lines printed above them.
        if self.multi.is_hidden() {
            eprintln!("{text}");
        } else {
            let _ = self.multi.println(text);
        }
    }
}

/// Progress as JSON lines on stdout, for programs: `start` and `done` for each task,
/// `progress` at most twice a second per task (bytes so far and the rate since the
/// start), and `message`.
pub struct JsonLines;

struct JsonTask {
    label: String,
    total: u64,
    started: std::time::Instant,
    state: std::sync::Mutex<(u64, std::time::Instant)>,
}

fn emit(value: serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

impl JsonTask {
    fn line(&self, event: &str, done: u64) -> serde_json::Value {
        let secs = self.started.elapsed().as_secs_f64();
        serde_json::json!({
            "event": event,
            "task": self.label,
            "bytes": done,
            "total": self.total,
            "seconds": (secs * 1000.0).round() / 1000.0,
            "bytes_per_second": if secs > 0.0 { (done as f64 / secs) as u64 } else { 0 },
        })
    }
}

impl Task for JsonTask {
    fn advance(&self, bytes: u64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0 += bytes;
        if state.1.elapsed() >= std::time::Duration::from_millis(500) {
            state.1 = std::time::Instant::now();
            emit(self.line("progress", state.0));
        }
    }
    fn finish(&self, note: &str) {
        let done = self.state.lock().unwrap_or_else(|e| e.into_inner()).0;
        let mut line = self.line("done", done);
        line["note"] = note.into();
        emit(line);
    }
}

impl Progress for JsonLines {
    fn task(&self, label: &str, total: u64) -> Box<dyn Task> {
        let now = std::time::Instant::now();
        let task = JsonTask {
            label: label.to_string(),
            total,
            started: now,
            state: std::sync::Mutex::new((0, now)),
        };
        emit(serde_json::json!({"event": "start", "task": label, "total": total}));
        Box::new(task)
    }

    fn message(&self, text: &str) {
        emit(serde_json::json!({"event": "message", "text": text}));
    }
}

/// Bars on stderr, or nothing when `quiet`.
pub fn reporter(quiet: bool) -> Box<dyn Progress> {
    if quiet {
        return Box::new(Quiet);
    }
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    Box::new(Bars { multi })
}

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

/// Bars on stderr, or nothing when `quiet`.
pub fn reporter(quiet: bool) -> Box<dyn Progress> {
    if quiet {
        return Box::new(Quiet);
    }
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    Box::new(Bars { multi })
}

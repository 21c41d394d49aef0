//! The terminal's progress bars for the library's [`Progress`] reports.

use dinoadapt_datasets::embedding::Progress;
use indicatif::{ProgressBar, ProgressStyle};

/// A bar on stderr (hidden with `--quiet`) named after the work (`embed`, `predict`).
pub struct Bar {
    what: &'static str,
    quiet: bool,
    bar: ProgressBar,
}

impl Bar {
    pub fn new(what: &'static str, quiet: bool) -> Self {
        Bar {
            what,
            quiet,
            bar: ProgressBar::hidden(),
        }
    }
}

impl Progress for Bar {
    fn start(&mut self, total: usize, unit: &str) {
        if !self.quiet {
            self.bar = ProgressBar::new(total as u64);
        }
        self.bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{spinner}} {} [{{bar:40}}] {{pos}}/{{len}} {unit} {{per_sec}} eta {{eta}}",
                self.what
            ))
            .expect("static template")
            .progress_chars("=> "),
        );
    }

    fn set(&mut self, done: usize) {
        self.bar.set_position(done as u64);
    }

    fn finish(&mut self) {
        self.bar.finish_and_clear();
    }
}

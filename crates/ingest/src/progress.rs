//! Progress bars on a terminal, silence elsewhere.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// Decides whether long work draws progress bars (only when stderr is a terminal).
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    enabled: bool,
}

impl Progress {
    /// Bars when stderr is a terminal and `quiet` is false.
    pub fn auto(quiet: bool) -> Self {
        Self { enabled: !quiet && std::io::stderr().is_terminal() }
    }

    /// Never draws.
    pub fn hidden() -> Self {
        Self { enabled: false }
    }

    /// A byte-counting bar for reading `len` bytes.
    pub fn bar(&self, len: u64, label: &str) -> ProgressBar {
        if !self.enabled {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template("{msg:30} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .expect("progress template")
                .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        bar
    }

    /// A row-counting bar whose length is set by the caller.
    pub fn rows_bar(&self) -> ProgressBar {
        if !self.enabled {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{msg:12} [{bar:40}] {human_pos}/{human_len} rows {per_sec} eta {eta}")
                .expect("progress template")
                .progress_chars("=> "),
        );
        bar.set_message("datagen");
        bar
    }
}

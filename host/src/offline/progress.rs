//! The progress bar of long commands (backfill, training sets, the demo): `indicatif` on
//! stderr, drawn only when stderr is a terminal — a pipe or a log file gets none of it.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar of `total` things: position, rate and ETA.
pub(crate) struct Progress(ProgressBar);

impl Progress {
    /// A bar counting events; none at all when `quiet`.
    pub(crate) fn new(total: u64, quiet: bool) -> Progress {
        Progress::of(total, quiet, "events")
    }

    /// A bar counting `unit`s; none at all when `quiet`.
    pub(crate) fn of(total: u64, quiet: bool, unit: &str) -> Progress {
        let bar = match quiet {
            true => ProgressBar::hidden(),
            false => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()),
        };
        let template = format!("  [{{bar:40}}] {{pos}}/{{len}} {unit}, {{per_sec}}, ETA {{eta}} ({{elapsed}})");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("## "));
        }
        Progress(bar)
    }

    /// `done` of the total are done.
    pub(crate) fn show(&mut self, done: u64) {
        self.0.set_position(done);
    }

    /// The end: the bar stays, full as far as `done`.
    pub(crate) fn finish(&mut self, done: u64) {
        self.0.set_position(done);
        self.0.finish();
    }
}

//! What the user sees of a long run: a progress bar per holder input (on a terminal) and
//! one-line accounts on stderr, as the engine reports them ([`Observer`]).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use renketsu_linkage::engine::Observer;

/// Prints the engine's log lines as `<prefix>: <line>` (not when quiet; warnings always) and
/// draws a byte progress bar while a holder's input is read.
pub(crate) struct CliObserver {
    prefix: &'static str,
    quiet: bool,
    bar: Option<ProgressBar>,
}

impl CliObserver {
    /// An observer for command `prefix` (e.g. `renketsu link`).
    pub(crate) fn new(prefix: &'static str, quiet: bool) -> Self {
        Self {
            prefix,
            quiet,
            bar: None,
        }
    }
}

impl Observer for CliObserver {
    fn log(&mut self, line: &str) {
        if !self.quiet {
            eprintln!("{}: {line}", self.prefix);
        }
    }

    fn warn(&mut self, line: &str) {
        eprintln!("{}: {line}", self.prefix);
    }

    fn holder_started(&mut self, name: &str, bytes: u64) {
        if self.quiet {
            return;
        }
        let pb = ProgressBar::with_draw_target(Some(bytes), ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        pb.set_prefix(name.to_owned());
        self.bar = Some(pb);
    }

    fn holder_progress(&mut self, bytes: u64) {
        if let Some(pb) = &self.bar {
            pb.set_position(bytes);
        }
    }

    fn holder_finished(&mut self) {
        if let Some(pb) = self.bar.take() {
            pb.finish_and_clear();
        }
    }
}

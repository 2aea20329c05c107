//! The progress bar of `dra train`, drawn from the library's [`Progress`] reports.

use dra_train::Progress;
use indicatif::{ProgressBar, ProgressStyle};

/// A terminal bar over a run's steps (base training, then AHL's epochs), or nothing with
/// `--quiet`.
pub(crate) struct Bar {
    show: bool,
    name: String,
    bar: ProgressBar,
}

impl Bar {
    pub(crate) fn new(show: bool, name: &str) -> Self {
        Self {
            show,
            name: name.to_string(),
            bar: ProgressBar::hidden(),
        }
    }

    pub(crate) fn show(&mut self, progress: Progress) {
        match progress {
            Progress::Started { steps, done } if self.show => {
                // A resumed run starts where its checkpoint stood; the ETA counts from here.
                self.bar = ProgressBar::new(steps as u64).with_position(done as u64);
                self.bar.reset_eta();
                self.bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix} [{elapsed_precise}] {bar:30} step {pos}/{len} {msg} ETA {eta}",
                    )
                    .expect("the template is valid"),
                );
                self.bar.set_prefix(self.name.clone());
            }
            Progress::Step {
                epoch,
                epochs,
                mean_loss,
            } => {
                self.bar
                    .set_message(format!("epoch {epoch}/{epochs} loss {mean_loss:.3}"));
                self.bar.inc(1);
            }
            Progress::AhlEpoch {
                epoch,
                epochs,
                query_loss,
            } => {
                self.bar.set_message(format!(
                    "AHL epoch {epoch}/{epochs} query loss {query_loss:.3}"
                ));
                self.bar.inc(1);
            }
            Progress::Trained => self.bar.finish_and_clear(),
            _ => {}
        }
    }
}

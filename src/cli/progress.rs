//! The progress bar drawn on stderr while converting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::convert::ProgressSink;

/// A files-and-events progress bar; hidden when disabled.
pub struct Bar {
    bar: ProgressBar,
    events: AtomicU64,
}

impl Bar {
    pub fn new(visible: bool) -> Bar {
        let target = if visible {
            ProgressDrawTarget::stderr_with_hz(8)
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(0), target);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} files  {msg}")
                .expect("the template is valid"),
        );
        Bar {
            bar,
            events: AtomicU64::new(0),
        }
    }

    pub fn clear(&self) {
        self.bar.finish_and_clear();
    }
}

impl ProgressSink for Bar {
    fn start(&self, files: usize, _bytes: Option<u64>) {
        self.bar.set_length(files as u64);
        self.bar.enable_steady_tick(Duration::from_millis(125));
    }

    fn file_done(&self, events: u64, _bytes: u64) {
        self.bar.inc(1);
        let total = self.events.fetch_add(events, Ordering::Relaxed) + events;
        self.bar
            .set_message(format!("{} events", super::summary::thousands(total)));
    }

    fn finishing(&self) {
        self.bar
            .set_message(format!("{} (sorting and writing Parquet)", self.bar.message()));
    }
}

//! Progress bars on stderr while a scenario runs (hidden when stderr is not
//! a terminal, so `--json` output and CI logs stay clean).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar that fills over `duration` by itself; it clears when dropped.
pub struct Timed {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

/// A bar over `duration` of load, labelled `label`.
pub fn timed(label: &str, duration: Duration) -> Timed {
    let millis = duration.as_millis().max(1) as u64;
    let bar = ProgressBar::new(millis).with_message(label.to_owned());
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {elapsed}/{duration}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let ticking = bar.clone();
    let ticker = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let mut ticks = tokio::time::interval(Duration::from_millis(200));
        loop {
            ticks.tick().await;
            ticking.set_position((started.elapsed().as_millis() as u64).min(millis));
        }
    });
    Timed { bar, ticker }
}

impl Drop for Timed {
    fn drop(&mut self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

/// A bar counting `total` steps (e.g. connections opened).
pub fn counter(label: &str, total: usize) -> ProgressBar {
    let bar = ProgressBar::new(total as u64).with_message(label.to_owned());
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

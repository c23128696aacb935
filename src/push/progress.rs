//! What a push shows while it runs: a progress bar on a terminal, one log
//! line per path otherwise (journald, CI logs), nothing when quiet.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::upload::UploadedNar;
use crate::pathinfo::PathInfo;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, log lines otherwise.
    #[default]
    Auto,
    /// One line per uploaded path on stderr.
    Lines,
    /// Nothing but errors.
    Quiet,
}

pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    /// NAR bytes read so far, fed by the producers.
    pub(crate) bytes: Arc<AtomicU64>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    pub(crate) fn start(mode: ProgressMode, paths: usize, total_bytes: u64) -> Progress {
        let bytes = Arc::new(AtomicU64::new(0));
        let use_bar = mode == ProgressMode::Auto && std::io::stderr().is_terminal() && paths > 0;
        let mut p = Progress {
            bar: None,
            lines: !use_bar && mode != ProgressMode::Quiet,
            bytes: bytes.clone(),
            ticker: None,
        };
        if use_bar {
            let bar =
                ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed:>4} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
                )
                .expect("the progress template is valid")
                .progress_chars("=> "),
            );
            bar.set_message(format!("0/{paths} paths"));
            let b = bar.clone();
            p.ticker = Some(tokio::spawn(async move {
                loop {
                    b.set_position(bytes.load(Ordering::Relaxed));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }));
            p.bar = Some(bar);
        }
        p
    }

    pub(crate) fn uploaded(&self, info: &PathInfo, nar: &UploadedNar, done: usize, paths: usize) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{done}/{paths} paths"));
        } else if self.lines {
            eprintln!(
                "uploaded {} ({} NAR, {} stored)",
                info.path,
                HumanBytes(info.nar_size),
                HumanBytes(nar.file_size)
            );
        }
    }

    pub(crate) fn failed(&self, path: &str, error: &str) {
        let line = format!("failed {path}: {error}");
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub(crate) fn finish(self) {
        if let Some(t) = self.ticker {
            t.abort();
        }
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

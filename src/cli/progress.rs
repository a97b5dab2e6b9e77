//! Pull progress bars on a terminal: one bar per blob being downloaded, under one
//! `indicatif::MultiProgress`, cleared when the blob is stored. Off when stderr is not a
//! terminal or `--json` is given, so logs and scripts see no control characters.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use perry_policies::Digest;
use perry_sandbox::exec::PullProgress;

/// Progress bars for the blobs of one pull.
pub(super) struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
}

impl Bars {
    /// Bars on stderr when it is a terminal and output is not JSON; otherwise `None`.
    pub(super) fn for_terminal(json: bool) -> Option<Arc<dyn PullProgress>> {
        if json || !std::io::stderr().is_terminal() {
            return None;
        }
        Some(Arc::new(Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
        }))
    }

    fn bars(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, ProgressBar>> {
        self.bars.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl PullProgress for Bars {
    fn start(&self, digest: &Digest, size: Option<u64>) {
        let bar = self.multi.add(ProgressBar::new(size.unwrap_or(0)));
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(format!("pulling {}", &digest.hex()[..12]));
        self.bars().insert(digest.clone(), bar);
    }

    fn advance(&self, digest: &Digest, n: u64) {
        if let Some(bar) = self.bars().get(digest) {
            bar.inc(n);
        }
    }

    fn finish(&self, digest: &Digest, _ok: bool) {
        if let Some(bar) = self.bars().remove(digest) {
            bar.finish_and_clear();
        }
    }
}

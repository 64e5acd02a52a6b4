//! What a run of the generator leaves behind and how it streams: the ground-truth and
//! summary files, the national totals read back from a ground-truth file, and the pace of a
//! feed produced at a set rate.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::{Generator, TruthRow};

impl Generator {
    /// Writes the ground truth to `truth` (JSON lines) and the summary to `summary`, or, by
    /// default, to `TRUTH.summary.json` beside a truth file that is (or will be) a regular
    /// file — never beside a device such as `/dev/null`. Returns where the summary went.
    pub fn write_outputs(&self, truth: Option<&Path>, summary: Option<&Path>) -> Result<Option<PathBuf>> {
        if let Some(path) = truth {
            let summary_goes_beside = std::fs::metadata(path).map_or(true, |m| m.is_file());
            let mut w =
                BufWriter::new(std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?);
            self.write_truth(&mut w)?;
            w.flush().with_context(|| format!("writing {}", path.display()))?;
            if summary.is_none() && !summary_goes_beside {
                return Ok(None);
            }
        }
        let path = match (summary, truth) {
            (Some(s), _) => s.to_owned(),
            (None, Some(t)) => {
                let mut s = t.as_os_str().to_owned();
                s.push(".summary.json");
                PathBuf::from(s)
            }
            (None, None) => return Ok(None),
        };
        std::fs::write(&path, serde_json::to_vec_pretty(self.summary())?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Some(path))
    }
}

/// The national totals of a ground-truth file: its rows added up into one (region 0, no
/// line or hour).
pub fn truth_totals(path: &Path) -> Result<TruthRow> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut t = TruthRow::default();
    for (i, line) in text.lines().enumerate() {
        let r: TruthRow = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: not a truth row", path.display(), i + 1))?;
        t.add(&r);
    }
    Ok(t)
}

/// Paces a feed produced at a set rate: in small steps (~200 a second) so that it streams
/// steadily, as a telecom feed does, instead of arriving in bursts.
pub struct Pacer {
    /// Messages per second; `None`: as fast as possible.
    rate: Option<f64>,
    /// Messages between two looks at the clock.
    step: u64,
    /// When the feed began.
    started: Instant,
}

impl Pacer {
    /// A pacer for `rate` messages a second (`None`: no pacing), starting now.
    pub fn new(rate: Option<f64>) -> Self {
        let step = rate.map_or(u64::MAX, |r| ((r / 200.0) as u64).clamp(1, 1024));
        Pacer { rate, step, started: Instant::now() }
    }

    /// Called after the `n`-th message: sleeps until the next one is due.
    pub fn after(&self, n: u64) {
        if let Some(rate) = self.rate
            && n.is_multiple_of(self.step)
            && let Some(wait) = Duration::from_secs_f64(n as f64 / rate).checked_sub(self.started.elapsed())
        {
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FeedOptions;
    use cdrflow_schemas::Counters;

    fn small_feed() -> Generator {
        let mut g = Generator::new(FeedOptions { cdrs: 2_000, seed: 7, ..FeedOptions::default() });
        while g.emit_next(&mut |_| Ok(())).unwrap() {}
        g
    }

    #[test]
    fn truth_totals_read_back_what_the_generator_counted() {
        let dir = std::env::temp_dir().join(format!("cdrflow-feed-output-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let g = small_feed();
        let truth = dir.join("truth.jsonl");
        let summary = g.write_outputs(Some(&truth), None).unwrap();
        assert_eq!(summary.as_deref(), Some(dir.join("truth.jsonl.summary.json").as_path()));
        let mut national = Counters::default();
        for c in g.truth().values() {
            national.merge(c);
        }
        let t = truth_totals(&truth).unwrap();
        assert!(t.offered > 1_500, "{t:?}");
        assert_eq!((t.offered, t.answered, t.abandoned), (national.offered, national.answered, national.abandoned));
        assert_eq!((t.wait_sum_ms, t.talk_sum_ms), (national.wait_sum_ms, national.talk_sum_ms));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_summary_beside_a_device() {
        let g = small_feed();
        assert_eq!(g.write_outputs(Some(Path::new("/dev/null")), None).unwrap(), None);
    }
}

//! `cdrflow backfill`: rebuilds the counters of some dates from the Parquet archive.
//!
//! It replaces what dashboards show, so it refuses what it cannot justify: a missing
//! archive, a topic the archive does not hold, a reversed date range, and cells it would
//! empty without evidence that the archive really has no calls there
//! ([`cdrflow_aggregate::rebuild::plan`]). It says what it will replace before it does, and
//! `--dry-run` says only that.

use std::time::Instant;

use anyhow::{Result, bail};
use cdrflow_aggregate::rebuild;
use cdrflow_archive::Archive;
use cdrflow_schemas::LineRegistry;

use super::{ClickHouseArgs, SelectionArgs};

#[derive(clap::Args)]
pub struct BackfillArgs {
    /// The archive to rebuild from: a directory or s3://BUCKET/PREFIX.
    #[arg(long = "from", env = "CDRFLOW_ARCHIVE")]
    archive: String,
    #[command(flatten)]
    selection: SelectionArgs,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    /// Print what the rebuild would replace (as JSON) and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Write the archive's counts over cells that count more calls now (zeros over those it
    /// holds none of) although the archive cannot vouch that those calls are gone: it may
    /// lag the stream or have lost units (by default such a rebuild is refused).
    #[arg(long)]
    allow_empty: bool,
    /// Threads that read a date's files and count its calls (in as many shards, for the
    /// same result); 0: one per core. A date's rows are held in memory until it is counted.
    #[arg(long, env = "CDRFLOW_BACKFILL_THREADS", default_value_t = 1)]
    threads: usize,
}

pub fn run(a: BackfillArgs) -> Result<()> {
    let threads = match super::at_most_4_per_core(
        "--threads",
        a.threads,
        "each thread holds a share of a date's rows",
        ", or 0 for one per core",
    )? {
        0 => super::cores(),
        n => n,
    };
    let sel = a.selection.selection()?;
    let archive = Archive::open_existing(&a.archive)?;
    if archive.partitions(&sel.topic)?.is_empty() {
        let topics = archive.topics()?;
        bail!(
            "the archive at {} holds no committed unit of topic {}{}: check --topic and --from; nothing was written",
            archive.describe(),
            sel.topic,
            if topics.is_empty() {
                " (it holds no unit at all: is this the directory the ingest workers write to?)".to_owned()
            } else {
                format!(" (it holds {})", topics.join(", "))
            }
        );
    }
    let rt = super::runtime()?;
    let ch = a.clickhouse.connect(&rt)?;
    let lines = LineRegistry::builtin();
    let started = Instant::now();
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{spinner} reading the archive {wide_bar} {pos}/{len} files {msg}")
            .expect("template"),
    );
    let recomputed = rebuild::recompute(&archive, &sel, &lines, false, threads, |done, total, rows| {
        bar.set_length(total);
        bar.set_position(done);
        bar.set_message(format!("{rows} rows"));
    })?;
    bar.finish_and_clear();
    let read_s = started.elapsed().as_secs_f64();
    let rows = recomputed.rows;
    let planned = rt.block_on(rebuild::plan(&ch, &sel, recomputed, &lines))?;
    let plan = &planned.plan;
    if plan.cells == 0 {
        bail!(
            "nothing to rebuild: the archive at {} holds no file of topic {} in the selection, and the dashboards count no call there; check the dates and --region",
            archive.describe(),
            sel.topic
        );
    }
    tracing::info!(
        files = plan.files,
        rows = plan.rows,
        new = plan.new_cells,
        replaced = plan.replaced_cells,
        emptied = plan.emptied_cells,
        lowered = plan.lowered_cells,
        offered_lowered = plan.offered_lowered,
        offered_now = plan.offered_now,
        offered_after = plan.offered_after,
        "the rebuild replaces {} cells counting {} calls with the archive's {} calls",
        plan.replaced_cells + plan.emptied_cells,
        plan.offered_now,
        plan.offered_after
    );
    if let Some(why) = plan.refusal(&archive.describe()) {
        if a.dry_run {
            tracing::warn!("without --allow-empty this rebuild would be refused: {why}");
        } else if a.allow_empty {
            tracing::warn!(
                cells = plan.unjustified_cells,
                calls = plan.unjustified_offered,
                "--allow-empty: lowering cells the archive cannot vouch for"
            );
        } else {
            bail!(why);
        }
    }
    if a.dry_run {
        println!("{}", serde_json::to_string_pretty(plan)?);
        return Ok(());
    }
    let mut summary = serde_json::to_value(plan)?;
    let rebuilt = rt.block_on(rebuild::write(&ch, &sel, planned, &lines))?;
    summary["rebuild_id"] = rebuilt.rebuild_id.into();
    summary["threads"] = threads.into();
    summary["seconds"] = started.elapsed().as_secs_f64().into();
    summary["rows_per_second_reading"] = (rows as f64 / read_s.max(1e-9)).round().into();
    tracing::info!(
        rows,
        cells = rebuilt.cells,
        rebuild_id = rebuilt.rebuild_id,
        "rebuilt the counters from the archive"
    );
    println!("{summary}");
    Ok(())
}

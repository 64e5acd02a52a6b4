//! Counters recomputed from the Parquet archive, with the streaming aggregator's own rollup
//! ([`PartitionRollup::add`]) and the versions rule of [`cdrflow_schemas::versions`]: one
//! implementation, two inputs. `cdrflow backfill` writes them over the hours they cover;
//! `cdrflow reconcile` compares them with what ClickHouse holds.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use cdrflow_ingest::archive::Archive;
use cdrflow_ingest::read::read_file;
use cdrflow_schemas::versions::{call_key, supersedes};
use cdrflow_schemas::{HourKey, LineRegistry, RegionCode};
use rustc_hash::FxHashMap;

use crate::clickhouse::ClickHouse;
use crate::clickhouse::encoder::{Unit, encode};
use crate::rollup::PartitionRollup;

/// Which part of the archive: a topic, UTC dates (inclusive, `YYYY-MM-DD`, the archive's
/// `dt`) and optionally one region.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Kafka topic whose units are read.
    pub topic: String,
    /// First UTC date, inclusive.
    pub from_date: Option<String>,
    /// Last UTC date, inclusive.
    pub to_date: Option<String>,
    /// One region only.
    pub region: Option<u8>,
}

impl Selection {
    /// Whether a file at `path` (`dt=…/region=…/…`) is selected.
    pub fn covers(&self, path: &str) -> bool {
        let mut parts = path.split('/');
        let dt = parts.next().and_then(|p| p.strip_prefix("dt=")).unwrap_or("");
        let region = parts.next().and_then(|p| p.strip_prefix("region=")).and_then(|r| r.parse::<u8>().ok());
        self.from_date.as_deref().is_none_or(|f| dt >= f)
            && self.to_date.as_deref().is_none_or(|t| dt <= t)
            && self.region.is_none_or(|r| region == Some(r))
    }

    /// The UTC hours covered, `[from, to)` in seconds (the whole range of DateTime when open).
    pub fn hours(&self) -> Result<(i64, i64)> {
        let day = |d: &str| -> Result<i64> {
            let date: jiff::civil::Date = d.parse().with_context(|| format!("{d} is not a YYYY-MM-DD date"))?;
            Ok(date.to_zoned(jiff::tz::TimeZone::UTC)?.timestamp().as_second())
        };
        let from = self.from_date.as_deref().map(day).transpose()?.unwrap_or(0);
        let to = self.to_date.as_deref().map(day).transpose()?.map(|t| t + 86_400).unwrap_or(u32::MAX as i64);
        Ok((from, to))
    }
}

/// Counters recomputed from the archive.
#[derive(Debug, Default)]
pub struct Recomputed {
    /// The cells, as the streaming aggregator would hold them.
    pub rollup: PartitionRollup,
    /// Files read.
    pub files: u64,
    /// Rows read.
    pub rows: u64,
    /// Rows that lost to a later version of the same call (re-sends, corrections).
    pub superseded: u64,
}

/// Recomputes the counters of the selected part of the archive from its committed files.
/// Versions of a call are resolved within a UTC date (its files are read together), so a
/// correction that moves a call's start across midnight counts on both dates. `progress`
/// sees (files done, files in all, rows read). A file a commit lists but the archive lacks
/// is an error, unless `skip_missing` (for `reconcile`, which names it anyway).
pub fn recompute(
    archive: &Archive,
    sel: &Selection,
    lines: &LineRegistry,
    skip_missing: bool,
    mut progress: impl FnMut(u64, u64, u64),
) -> Result<Recomputed> {
    let present: rustc_hash::FxHashSet<String> = archive.data_files()?.into_iter().collect();
    let mut by_date: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in archive.partitions(&sel.topic)? {
        for unit in archive.committed(&sel.topic, p)? {
            for f in unit.files.into_iter().filter(|f| sel.covers(&f.path)) {
                let dt = f.path.split('/').next().unwrap_or_default().to_owned();
                by_date.entry(dt).or_default().push(f.path);
            }
        }
    }
    let total: u64 = by_date.values().map(|v| v.len() as u64).sum();
    let mut out = Recomputed::default();
    for files in by_date.values() {
        let mut rows = Vec::new();
        for f in files {
            if !present.contains(f) {
                if skip_missing {
                    continue;
                }
                anyhow::bail!(
                    "{f} is listed by its unit's commit but is not in {}: the archive is damaged; `cdrflow reconcile` names every such file",
                    archive.describe()
                );
            }
            let bytes = archive.get(f)?;
            rows.extend(read_file(bytes.into(), lines).with_context(|| format!("reading {f}"))?);
            out.files += 1;
            progress(out.files, total, out.rows + rows.len() as u64);
        }
        out.rows += rows.len() as u64;
        // The latest version of each call (schemas::versions).
        let mut best: FxHashMap<&str, usize> = FxHashMap::default();
        best.reserve(rows.len());
        for (i, r) in rows.iter().enumerate() {
            let order = |i: usize| (rows[i].cdr.end_ms, rows[i].partition, rows[i].offset);
            match best.entry(r.cdr.call_id.as_str()) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(i);
                }
                std::collections::hash_map::Entry::Occupied(mut o) => {
                    out.superseded += 1;
                    if supersedes(order(i), order(*o.get())) {
                        o.insert(i);
                    }
                }
            }
        }
        let mut kept: Vec<usize> = best.into_values().collect();
        kept.sort_unstable();
        for i in kept {
            let cdr = &rows[i].cdr;
            out.rollup.add(cdr, call_key(&cdr.call_id), lines);
        }
    }
    Ok(out)
}

/// What a rebuild wrote.
#[derive(Debug, serde::Serialize)]
pub struct Rebuilt {
    /// Its id: the `flushed_at` of its rows.
    pub rebuild_id: u32,
    /// Cells written (including emptied ones).
    pub cells: usize,
    /// Cells that held streaming counts and none in the archive, written as zeros.
    pub emptied: usize,
}

/// Writes recomputed counters over the hours they cover, in ONE insert into
/// `counters_rebuilt` (one part: dashboards see all of the rebuild or none of it). Cells
/// that the dashboards show in the selection but the archive does not hold are written with
/// zeros, so they are replaced too.
pub async fn write_rebuild(
    ch: &ClickHouse,
    sel: &Selection,
    mut recomputed: PartitionRollup,
    lines: &LineRegistry,
) -> Result<Rebuilt> {
    let (from, to) = sel.hours()?;
    let mut emptied = 0;
    for (region, line, hour) in ch.current_cells(from, to, sel.region).await? {
        let Some(line) = lines.by_id(&line) else { continue };
        let key = HourKey { region: RegionCode(region), line, hour };
        if let std::collections::hash_map::Entry::Vacant(v) = recomputed.rows.entry(key) {
            v.insert(crate::rollup::Cell::default());
            emptied += 1;
        }
    }
    let rebuild_id = ch.next_rebuild_id().await?;
    if recomputed.rows.is_empty() {
        return Ok(Rebuilt { rebuild_id, cells: 0, emptied });
    }
    recomputed.first_offset = Some(0);
    recomputed.last_offset = 0;
    let unit = Unit { group: "backfill", topic: &sel.topic, partition: 0, flushed_at: rebuild_id };
    let rows = encode(&unit, &recomputed, lines);
    ch.insert_rebuild(&rows).await?;
    Ok(Rebuilt { rebuild_id, cells: rows.len(), emptied })
}

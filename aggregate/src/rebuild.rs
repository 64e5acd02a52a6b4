//! Counters recomputed from the Parquet archive, with the streaming aggregator's own rollup
//! ([`PartitionRollup::add`]) and the versions rule of [`cdrflow_schemas::versions`]: one
//! implementation, two inputs. `cdrflow backfill` writes them over the hours they cover;
//! `cdrflow reconcile` compares them with what ClickHouse holds.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use cdrflow_archive::Archive;
use cdrflow_archive::encode::ArchivedCdr;
use cdrflow_archive::read::read_for_counters;
use cdrflow_schemas::versions::{call_key, supersedes};
use cdrflow_schemas::{HourKey, LineRegistry, RegionCode};
use rustc_hash::FxHashMap;
use std::collections::hash_map::Entry;

use crate::clickhouse::encoder::{Unit, encode};
use crate::clickhouse::{CellSource, ClickHouse};
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
    /// The offset ranges of the topic's committed units, per partition, sorted: what the
    /// archive can vouch for.
    pub covered: BTreeMap<i32, Vec<(i64, i64)>>,
    /// The UTC dates (`YYYY-MM-DD`) of the files read.
    pub dates: std::collections::BTreeSet<String>,
}

impl Recomputed {
    /// Whether the archive's committed units cover every offset of `[first, last]` of `partition`.
    pub fn covers(&self, partition: i32, first: i64, last: i64) -> bool {
        let mut next = first;
        for &(a, b) in self.covered.get(&partition).map(Vec::as_slice).unwrap_or(&[]) {
            if a > next {
                break;
            }
            next = next.max(b + 1);
            if next > last {
                return true;
            }
        }
        next > last
    }
}

/// Recomputes the counters of the selected part of the archive from its committed files.
/// Versions of a call are resolved within a UTC date (its files are read together), so a
/// correction that moves a call's start across midnight counts on both dates. With
/// `threads` > 1, a date's files are read that many at a time, and its calls are then
/// resolved and counted in as many shards by call key (a call's versions all land in one
/// shard); the result is the same for any number of threads. `progress` sees (files done,
/// files in all, rows read). A file a commit lists but the archive lacks is an error,
/// unless `skip_missing` (for `reconcile`, which names it anyway).
pub fn recompute(
    archive: &Archive,
    sel: &Selection,
    lines: &LineRegistry,
    skip_missing: bool,
    threads: usize,
    mut progress: impl FnMut(u64, u64, u64),
) -> Result<Recomputed> {
    let present: rustc_hash::FxHashSet<String> = archive.data_files()?.into_iter().collect();
    let mut by_date: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut covered: BTreeMap<i32, Vec<(i64, i64)>> = BTreeMap::new();
    for p in archive.partitions(&sel.topic)? {
        for unit in archive.committed(&sel.topic, p)? {
            covered.entry(p).or_default().push((unit.first_offset, unit.last_offset));
            for f in unit.files.into_iter().filter(|f| sel.covers(&f.path)) {
                let dt = f.path.split('/').next().unwrap_or_default().to_owned();
                by_date.entry(dt).or_default().push(f.path);
            }
        }
    }
    let total: u64 = by_date.values().map(|v| v.len() as u64).sum();
    let mut out = Recomputed {
        covered,
        dates: by_date.keys().map(|d| d.trim_start_matches("dt=").to_owned()).collect(),
        ..Default::default()
    };
    let threads = threads.max(1);
    for files in by_date.values() {
        let (files, missing): (Vec<&String>, Vec<&String>) = files.iter().partition(|f| present.contains(*f));
        if let Some(f) = missing.first().filter(|_| !skip_missing) {
            anyhow::bail!(
                "{f} is listed by its unit's commit but is not in {}: the archive is damaged; `cdrflow reconcile` names every such file",
                archive.describe()
            );
        }
        let parts = read_date(archive, &files, lines, threads, |n_files, n_rows| {
            out.files += n_files;
            out.rows += n_rows;
            progress(out.files, total, out.rows);
        })?;
        let shards: Vec<(PartitionRollup, u64)> = std::thread::scope(|scope| {
            let parts = &parts;
            let workers: Vec<_> =
                (1..threads).map(|shard| scope.spawn(move || count_shard(parts, shard, threads, lines))).collect();
            let mut shards = vec![count_shard(parts, 0, threads, lines)];
            shards.extend(workers.into_iter().map(|w| w.join().expect("a rebuild thread panicked")));
            shards
        });
        for (rollup, superseded) in shards {
            out.rollup.absorb(rollup);
            out.superseded += superseded;
        }
    }
    // Call keys in one order whatever the number of shards.
    for cell in out.rollup.rows.values_mut() {
        cell.calls.sort_unstable();
    }
    Ok(out)
}

/// The rows of one date's files and their call keys, file by file in the files' order
/// (not copied into one vector: rows are large), read `threads` files at a time;
/// `progress` sees (files, rows) as each file is read.
fn read_date(
    archive: &Archive,
    files: &[&String],
    lines: &LineRegistry,
    threads: usize,
    mut progress: impl FnMut(u64, u64),
) -> Result<Vec<Part>> {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    let read = |f: &String| -> Result<Part> {
        let rows = read_for_counters(archive.get(f)?.into(), lines).with_context(|| format!("reading {f}"))?;
        let keys = rows.iter().map(|r| call_key(&r.cdr.call_id)).collect();
        Ok((rows, keys))
    };
    let next = AtomicUsize::new(0);
    let mut parts: Vec<Option<Part>> = (0..files.len()).map(|_| None).collect();
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<Part>)>();
        for _ in 0..threads.min(files.len()) {
            let (tx, next, read) = (tx.clone(), &next, &read);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Relaxed);
                    let Some(f) = files.get(i) else { return };
                    if tx.send((i, read(f))).is_err() {
                        return; // the reader gave up on an error
                    }
                }
            });
        }
        drop(tx);
        for (i, part) in rx {
            let part = part.inspect_err(|_| next.store(usize::MAX / 2, Relaxed))?;
            progress(1, part.0.len() as u64);
            parts[i] = Some(part);
        }
        Ok(())
    })?;
    Ok(parts.into_iter().flatten().collect())
}

/// One file's rows and their call keys.
type Part = (Vec<ArchivedCdr>, Vec<u64>);

/// Resolves the versions of the calls of one shard (`key % shards == shard`) of a date's
/// rows and counts the latest of each: the shard's cells and how many versions lost.
///
/// A call's versions are found by its call key: a map of keys meets each row without
/// reading it (the keys were computed as the files were read), and only when a key comes
/// again are the two rows' call ids compared. Distinct calls whose keys collide are
/// resolved by their ids in a second map, so the result is that of a map of ids, without
/// its cost: hashing each id read every row's memory once more, at random. The rows that
/// won are then counted in the order of the files, each asked for ahead of its turn.
fn count_shard(parts: &[Part], shard: usize, shards: usize, lines: &LineRegistry) -> (PartitionRollup, u64) {
    let row = |(p, i): (u32, u32)| &parts[p as usize].0[i as usize];
    let mut superseded = 0;
    // Of the version of a call held and the one at `at`, keeps the later; counts the other.
    let mut latest = |held: &mut (u32, u32), at: (u32, u32)| {
        superseded += 1;
        let order = |at| {
            let r = row(at);
            (r.cdr.end_ms, r.partition, r.offset)
        };
        if supersedes(order(at), order(*held)) {
            *held = at;
        }
    };
    let mut by_key: FxHashMap<u64, (u32, u32)> = FxHashMap::default();
    by_key.reserve(parts.iter().map(|p| p.0.len()).sum::<usize>() / shards);
    // Calls whose key an earlier call with another id holds in `by_key`.
    let mut collided: FxHashMap<&str, (u32, u32)> = FxHashMap::default();
    for (p, (_, keys)) in parts.iter().enumerate() {
        for (i, &key) in keys.iter().enumerate().filter(|(_, k)| **k % shards as u64 == shard as u64) {
            let at = (p as u32, i as u32);
            match by_key.entry(key) {
                Entry::Vacant(v) => {
                    v.insert(at);
                }
                Entry::Occupied(mut o) if row(*o.get()).cdr.call_id == row(at).cdr.call_id => latest(o.get_mut(), at),
                Entry::Occupied(_) => match collided.entry(row(at).cdr.call_id.as_str()) {
                    Entry::Vacant(v) => {
                        v.insert(at);
                    }
                    Entry::Occupied(mut o) => latest(o.get_mut(), at),
                },
            }
        }
    }
    let mut kept: Vec<(u32, u32)> = by_key.into_values().chain(collided.into_values()).collect();
    kept.sort_unstable();
    let mut rollup = PartitionRollup::default();
    for (n, &at) in kept.iter().enumerate() {
        if let Some(&ahead) = kept.get(n + cdrflow_archive::encode::PREFETCH_AHEAD) {
            cdrflow_archive::encode::prefetch(row(ahead));
        }
        rollup.add(&row(at).cdr, parts[at.0 as usize].1[at.1 as usize], lines);
    }
    (rollup, superseded)
}

/// What a rebuild would replace, worked out before anything is written: `backfill` prints
/// it (and `--dry-run` prints only it), and refuses a plan it cannot justify.
#[derive(Debug, Default, serde::Serialize)]
pub struct Plan {
    /// Topic rebuilt.
    pub topic: String,
    /// First UTC date, inclusive (`None`: from the first).
    pub from_date: Option<String>,
    /// Last UTC date, inclusive (`None`: to the last).
    pub to_date: Option<String>,
    /// One region only.
    pub region: Option<u8>,
    /// Archive files read.
    pub files: u64,
    /// Rows read.
    pub rows: u64,
    /// Rows that lost to a later version of their call.
    pub superseded_versions: u64,
    /// Cells the rebuild writes (new, replaced and emptied).
    pub cells: usize,
    /// Cells the dashboards do not show yet.
    pub new_cells: usize,
    /// Cells whose counters are replaced by the archive's.
    pub replaced_cells: usize,
    /// Cells that count calls now and none in the archive: written as zeros.
    pub emptied_cells: usize,
    /// Cells whose calls the rebuild lowers, the emptied ones included.
    pub lowered_cells: usize,
    /// Calls the dashboards count in the selection now.
    pub offered_now: u64,
    /// Calls they will count after the rebuild.
    pub offered_after: u64,
    /// Calls in the emptied cells.
    pub offered_emptied: u64,
    /// Calls the lowered cells lose.
    pub offered_lowered: u64,
    /// Lowered cells the archive cannot vouch for (the calls they would lose may be in the
    /// archive under another path, topic or date, not archived yet, or lost from it), with
    /// why; at most 20 are listed.
    pub unjustified: Vec<String>,
    /// How many lowered cells the archive cannot vouch for.
    pub unjustified_cells: usize,
    /// The calls they would lose.
    pub unjustified_offered: u64,
    /// Dates in the selection with counters on the dashboards and no file in the archive.
    pub dates_without_files: Vec<String>,
}

/// A plan and the cells it would write.
pub struct Rebuild {
    /// What it replaces.
    pub plan: Plan,
    /// The counters to write: the archive's, and zeros for emptied cells.
    cells: PartitionRollup,
}

/// Works out what rebuilding `sel` from `recomputed` would replace. A lowered cell (fewer
/// calls in the archive than on the dashboards, none at all for an emptied one) is
/// justified only when every streaming flush that counted it came from this topic and the
/// archive's committed units cover all of that flush's offsets: then the archive read every
/// message the stream counted there, and a call it does not hold is a call that is not
/// there (a correction moved it, or a re-send past the window was counted twice).
/// Otherwise (an archive that lags the stream, lost units, or holds another deployment's
/// feed) the cell goes into [`Plan::unjustified`], and [`Plan::refusal`] explains why
/// writing it would destroy counts.
pub async fn plan(
    ch: &ClickHouse,
    sel: &Selection,
    mut recomputed: Recomputed,
    lines: &LineRegistry,
) -> Result<Rebuild> {
    let (from, to) = sel.hours()?;
    let mut plan = Plan {
        topic: sel.topic.clone(),
        from_date: sel.from_date.clone(),
        to_date: sel.to_date.clone(),
        region: sel.region,
        files: recomputed.files,
        rows: recomputed.rows,
        superseded_versions: recomputed.superseded,
        ..Plan::default()
    };
    let mut cells = std::mem::take(&mut recomputed.rollup);
    plan.offered_after = cells.rows.values().map(|c| c.counters.offered).sum();
    let now = ch.current_offered(from, to, sel.region).await?;
    // The cells the rebuild would lower: calls now, calls after.
    let mut lowered: BTreeMap<(u8, String, i64), (u64, u64)> = BTreeMap::new();
    let mut emptied = Vec::new();
    let mut dates_without = std::collections::BTreeSet::new();
    for (region, line_id, hour, offered) in now {
        plan.offered_now += offered;
        let Some(line) = lines.by_id(&line_id) else { continue };
        let key = HourKey { region: RegionCode(region), line, hour };
        match cells.rows.get(&key) {
            Some(cell) => {
                plan.replaced_cells += 1;
                if cell.counters.offered < offered {
                    lowered.insert((region, line_id, hour), (offered, cell.counters.offered));
                }
            }
            None if offered > 0 => {
                plan.offered_emptied += offered;
                emptied.push(key);
                lowered.insert((region, line_id, hour), (offered, 0));
                let date = jiff::Timestamp::from_second(hour)?.to_zoned(jiff::tz::TimeZone::UTC).date().to_string();
                if !recomputed.dates.contains(&date) {
                    dates_without.insert(date);
                }
            }
            None => {}
        }
    }
    plan.new_cells = cells.rows.len() - plan.replaced_cells;
    plan.emptied_cells = emptied.len();
    plan.lowered_cells = lowered.len();
    plan.offered_lowered = lowered.values().map(|(now, after)| now - after).sum();
    plan.dates_without_files = dates_without.into_iter().collect();
    if !lowered.is_empty() {
        let mut sources: BTreeMap<(u8, String, i64), Vec<CellSource>> = BTreeMap::new();
        for s in ch.cell_sources(from, to, sel.region).await? {
            if lowered.contains_key(&(s.region, s.line.clone(), s.hour as i64)) {
                sources.entry((s.region, s.line.clone(), s.hour as i64)).or_default().push(s);
            }
        }
        for ((region, line_id, hour), (now, after)) in &lowered {
            let at = format!(
                "region {region} line {line_id} {} ({now} calls now, {after} in the archive)",
                jiff::Timestamp::from_second(*hour).map(|t| t.to_string()).unwrap_or_default()
            );
            let why = match sources.get(&(*region, line_id.clone(), *hour)) {
                None => Some(format!("{at}: counted only by an earlier rebuild, which the archive no longer backs")),
                Some(srcs) => srcs.iter().find_map(|s| {
                    if s.topic != sel.topic {
                        Some(format!("{at}: counted from topic {}, not {}", s.topic, sel.topic))
                    } else if !recomputed.covers(s.kafka_partition as i32, s.first_offset as i64, s.last_offset as i64)
                    {
                        Some(format!(
                            "{at}: counted from offsets {}–{} of partition {}, which no committed archive unit covers",
                            s.first_offset, s.last_offset, s.kafka_partition
                        ))
                    } else {
                        None
                    }
                }),
            };
            if let Some(why) = why {
                plan.unjustified_cells += 1;
                plan.unjustified_offered += now - after;
                if plan.unjustified.len() < 20 {
                    plan.unjustified.push(why);
                }
            }
        }
    }
    for key in emptied {
        cells.rows.insert(key, crate::rollup::Cell::default());
    }
    plan.cells = cells.rows.len();
    Ok(Rebuild { plan, cells })
}

impl Plan {
    /// Why this plan must not be written without `--allow-empty`, naming the fix; `None`
    /// when the archive vouches for every cell it empties.
    pub fn refusal(&self, archive: &str) -> Option<String> {
        if self.unjustified_cells == 0 {
            return None;
        }
        let mut why = format!(
            "refusing to rebuild: it would take {} calls off {} cells of the dashboards (emptying or lowering them), and the archive at {archive} cannot vouch that those calls are not there",
            self.unjustified_offered, self.unjustified_cells
        );
        if !self.dates_without_files.is_empty() {
            why.push_str(&format!(
                "; it holds no file of topic {} for {}",
                self.topic,
                self.dates_without_files.join(", ")
            ));
        }
        why.push_str(":\n  ");
        why.push_str(&self.unjustified.join("\n  "));
        if self.unjustified_cells > self.unjustified.len() {
            why.push_str(&format!("\n  … and {} more", self.unjustified_cells - self.unjustified.len()));
        }
        why.push_str(
            "\nCheck --from, --topic, the dates and --region. If those calls are truly gone from the archive, --allow-empty writes the archive's counts (zeros where it holds none) over them. Nothing was written.",
        );
        Some(why)
    }
}

/// What a rebuild wrote.
#[derive(Debug, serde::Serialize)]
pub struct Rebuilt {
    /// Its id: the `flushed_at` of its rows.
    pub rebuild_id: u32,
    /// Cells written (including emptied ones).
    pub cells: usize,
}

/// Writes a planned rebuild over the hours it covers, in ONE insert into
/// `counters_rebuilt` (one part: dashboards see all of the rebuild or none of it).
pub async fn write(ch: &ClickHouse, sel: &Selection, rebuild: Rebuild, lines: &LineRegistry) -> Result<Rebuilt> {
    let mut cells = rebuild.cells;
    let rebuild_id = ch.next_rebuild_id().await?;
    if cells.rows.is_empty() {
        return Ok(Rebuilt { rebuild_id, cells: 0 });
    }
    cells.first_offset = Some(0);
    cells.last_offset = 0;
    let unit = Unit { group: "backfill", topic: &sel.topic, partition: 0, flushed_at: rebuild_id };
    let rows = encode(&unit, &cells, lines);
    ch.insert_rebuild(&rows).await?;
    Ok(Rebuilt { rebuild_id, cells: rows.len() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cdrflow_schemas::{Counters, CsvFeed, Decoder, Format, Pseudonymiser};

    /// One date of files: 600 calls of one to three versions each (a correction may change
    /// the call's end, disposition and hour), the versions of a call scattered over four
    /// files, so a later file may hold an earlier version.
    fn files_of_a_date(lines: &std::sync::Arc<LineRegistry>) -> Vec<Vec<ArchivedCdr>> {
        let decoder = Decoder::new(lines.clone(), Pseudonymiser::ephemeral());
        let mut files: Vec<Vec<ArchivedCdr>> = vec![Vec::new(); 4];
        let mut x = 11u64;
        for (offset, call) in (0..600u64).flat_map(|c| (0..=c % 3).map(move |_| c)).enumerate() {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let (region, dialled) = ([38, 77, 50][call as usize % 3], ["122", "112", "117"][(x >> 20) as usize % 3]);
            let (hour, minute, talk) = (5 + (x >> 30) % 3, (x >> 36) % 50, (x >> 44) % 500);
            let start = format!("2022-02-14T{hour:02}:{minute:02}:00Z");
            let json = match (x >> 54) % 2 {
                0 => format!(
                    r#"{{"call_id":"c-{call}","region":{region},"dialled":"{dialled}","start":"{start}","answer":"2022-02-14T{hour:02}:{minute:02}:05Z","end":"2022-02-14T{hour:02}:{:02}:{:02}Z","queue_wait_ms":5000,"talk_ms":{},"disposition":"answered","channel":"voice"}}"#,
                    minute + 1 + talk / 60,
                    talk % 60,
                    (55 + talk) * 1000
                ),
                _ => format!(
                    r#"{{"call_id":"c-{call}","region":{region},"dialled":"{dialled}","start":"{start}","end":"2022-02-14T{hour:02}:{minute:02}:{:02}Z","queue_wait_ms":{},"talk_ms":0,"disposition":"abandoned","channel":"voice"}}"#,
                    talk % 60,
                    talk % 60 * 1000
                ),
            };
            let cdr = decoder.decode(Format::Json, &CsvFeed::FromAccountcode, json.as_bytes()).expect("a valid CDR");
            let row = ArchivedCdr { partition: ((x >> 58) % 3) as i32, offset: offset as i64, cdr };
            files[((x >> 60) % 4) as usize].push(row);
        }
        files
    }

    /// Every cell's counters and call keys, and the versions that lost.
    type Counted = (BTreeMap<HourKey, (Counters, Vec<u64>)>, u64);

    fn counted(rollup: PartitionRollup, superseded: u64) -> Counted {
        let cells = rollup.rows.into_iter().map(|(k, mut c)| {
            c.calls.sort_unstable();
            (k, (c.counters, c.calls))
        });
        (cells.collect(), superseded)
    }

    /// The versions rule applied the plain way: each call's versions found by its id.
    fn by_id(parts: &[Part], lines: &LineRegistry) -> Counted {
        let mut latest: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
        let mut superseded = 0;
        let row = |(p, i): (u32, u32)| &parts[p as usize].0[i as usize];
        let order = |at| (row(at).cdr.end_ms, row(at).partition, row(at).offset);
        for (p, (rows, _)) in parts.iter().enumerate() {
            for (i, r) in rows.iter().enumerate() {
                let at = (p as u32, i as u32);
                let held = latest.entry(r.cdr.call_id.as_str()).or_insert(at);
                if *held != at {
                    superseded += 1;
                    if supersedes(order(at), order(*held)) {
                        *held = at;
                    }
                }
            }
        }
        let mut rollup = PartitionRollup::default();
        for (p, i) in latest.into_values() {
            rollup.add(&row((p, i)).cdr, parts[p as usize].1[i as usize], lines);
        }
        counted(rollup, superseded)
    }

    #[test]
    fn each_call_counts_its_latest_version_once_in_any_shards_even_when_keys_collide() {
        let lines = LineRegistry::builtin();
        let files = files_of_a_date(&lines);
        // The call keys as read, then keys made to collide: distinct calls that share a
        // key must still be told apart by their ids.
        let keyings = [("as read", call_key as fn(&str) -> u64), ("two", |id| call_key(id) % 2), ("one", |_| 7)];
        for (keying, key) in keyings {
            let parts: Vec<Part> =
                files.iter().map(|rows| (rows.clone(), rows.iter().map(|r| key(&r.cdr.call_id)).collect())).collect();
            let expected = by_id(&parts, &lines);
            assert_eq!(expected.1, 600, "every third call has two versions more");
            for shards in 1..=3 {
                let mut all = PartitionRollup::default();
                let mut superseded = 0;
                for shard in 0..shards {
                    let (rollup, lost) = count_shard(&parts, shard, shards, &lines);
                    all.absorb(rollup);
                    superseded += lost;
                }
                assert_eq!(counted(all, superseded), expected, "{shards} shards, keys: {keying}");
            }
        }
    }
}

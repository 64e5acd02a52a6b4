//! Talking to ClickHouse: inserts, positions, migrations and dashboard queries.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use cdrflow_schemas::sql::{self, Param};
use cdrflow_schemas::{Counters, Regions};
use serde::{Deserialize, Serialize};

use super::config::ClickHouseConfig;
use super::encoder::CounterRow;

/// A ClickHouse server holding cdrflow's database.
#[derive(Clone)]
pub struct ClickHouse {
    cfg: ClickHouseConfig,
    client: clickhouse::Client,
}

/// `insert_quorum_timeout`: a week (see [`ClickHouse::new`]).
pub const QUORUM_WAIT_MS: u64 = 7 * 24 * 3600 * 1000;

/// ClickHouse error codes a worker waits out, with what they mean for it and a metric label.
const WAITS: &[(u32, &str, &str)] = &[
    (
        285,
        "quorum_not_reached",
        "fewer replicas of the shard are alive than insert_quorum: a replica is down, and writes wait for it",
    ),
    (286, "quorum_pending", "the shard's previous quorum insert is not confirmed yet: a replica is lagging or down"),
    (
        319,
        "quorum_unknown",
        "the quorum was not confirmed within insert_quorum_timeout: whether the insert landed is read back before trying again",
    ),
    (
        289,
        "replica_behind",
        "this replica lacks inserts confirmed by a quorum (select_sequential_consistency): it is catching up",
    ),
    (242, "replica_read_only", "the table is read-only on this replica: its ZooKeeper session is lost"),
    (225, "zookeeper", "the server has no ZooKeeper session"),
    (999, "zookeeper", "a ZooKeeper operation failed"),
    (252, "too_many_parts", "too many parts: merges are behind"),
    (159, "timeout", "a timeout on the server"),
];

/// What an attempt says when ClickHouse still runs the insert before it
/// ([`ClickHouse::running`]); `failure_reason` labels it `earlier_insert_running`.
pub const STILL_RUNNING: &str = "still runs the flush's earlier insert";

/// The `Code: N` of a ClickHouse exception in an error's text.
fn code_in(text: &str) -> Option<u32> {
    let rest = &text[text.find("Code: ")? + 6..];
    rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len())].parse().ok()
}

/// Why a ClickHouse request failed, as a metric label (`cdrflow_sink_errors_total{reason}`):
/// `unreachable`, one of the waits above (`quorum_not_reached`, `replica_read_only`, …) or `other`.
pub fn failure_reason(e: &anyhow::Error) -> &'static str {
    let text = format!("{e:#}");
    if text.contains("did not answer") {
        return "unreachable";
    }
    if text.contains(STILL_RUNNING) {
        return "earlier_insert_running";
    }
    code_in(&text).and_then(|c| WAITS.iter().find(|w| w.0 == c)).map_or("other", |w| w.1)
}

/// Turns a client error into one that names the server, what it means and the fix.
fn explain(e: clickhouse::error::Error, cfg: &ClickHouseConfig, doing: &str) -> anyhow::Error {
    match &e {
        clickhouse::error::Error::Network(_) => anyhow!(
            "ClickHouse at {} did not answer while {doing} ({e}): is it running? Locally: deploy/local/clickhouse.sh start",
            cfg.url
        ),
        _ => {
            let text = e.to_string();
            match code_in(&text).and_then(|c| WAITS.iter().find(|w| w.0 == c)) {
                Some((_, _, means)) => anyhow!("ClickHouse at {} failed while {doing}: {means} ({text})", cfg.url),
                None => anyhow!("ClickHouse at {} failed while {doing}: {e}", cfg.url),
            }
        }
    }
}

/// How `counters_log` is laid out: one table on one server, or a Distributed table over
/// shards. A flush must be one insert per shard to stay all-or-nothing (a Distributed insert
/// that spans shards is as many inserts as shards), so the aggregator groups its units by
/// the shard each Kafka partition lands on, exactly as the Distributed engine chooses it:
/// `kafka_partition % total weight`, slots given to shards by weight, in shard order.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// Slot → shard number; empty on one server.
    slot_to_shard: Vec<u32>,
    /// The most replicas any shard has (0 on one server).
    pub replicas: usize,
}

impl Layout {
    /// The shard (1-based; 0 on one server) that partition `p`'s rows land on.
    pub fn shard_of(&self, p: i32) -> u32 {
        if self.slot_to_shard.is_empty() {
            return 0;
        }
        self.slot_to_shard[(p as usize) % self.slot_to_shard.len()]
    }

    /// Shards, 0 on one server.
    pub fn shards(&self) -> usize {
        self.slot_to_shard.iter().collect::<std::collections::BTreeSet<_>>().len()
    }
}

/// One flush of one partition in the streaming log (see [`ClickHouse::log_units`]).
#[derive(Debug, Clone, clickhouse::Row, Deserialize, Serialize)]
pub struct LogUnit {
    pub kafka_partition: u16,
    pub first_offset: u64,
    pub last_offset: u64,
    pub rows: u64,
    pub cells: u64,
}

/// Where the streaming counts of one (region, line, hour) came from (see
/// [`ClickHouse::cell_sources`]).
#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub struct CellSource {
    pub region: u8,
    pub line: String,
    pub hour: u32,
    pub topic: String,
    pub kafka_partition: u16,
    /// The first offset of the first flush that counted it.
    pub first_offset: u64,
    /// The last offset of the last flush that counted it.
    pub last_offset: u64,
}

/// SQL restricting `hour` to `[from, to)` and maybe one region: numbers only.
fn hours_filter(from: i64, to: i64, region: Option<u8>) -> String {
    let mut f = format!("AND hour >= toDateTime({from}) AND hour < toDateTime({to})");
    if let Some(r) = region {
        f.push_str(&format!(" AND region = {r}"));
    }
    f
}

#[derive(clickhouse::Row, Deserialize)]
struct Position {
    kafka_partition: u16,
    last: u64,
}

#[derive(clickhouse::Row, Serialize)]
struct RegionRow<'a> {
    region: u8,
    name_ru: &'a str,
    name_en: &'a str,
    time_zone: &'a str,
}

#[derive(clickhouse::Row, Serialize, Deserialize)]
struct MigrationRow {
    version: u32,
    name: String,
    applied_at: u32,
}

/// Counters of one (region, line, hour) as stored, summed over every flush.
#[derive(Debug, clickhouse::Row, Deserialize)]
struct StoredCounters {
    region: u8,
    line: String,
    hour: u32,
    offered: u64,
    answered: u64,
    abandoned: u64,
    short_abandoned: u64,
    unanswered: u64,
    answered_within_sl: u64,
    abandoned_after_sl: u64,
    wait_sum_ms: u64,
    wait_max_ms: u64,
    talk_sum_ms: u64,
    transferred_out: u64,
    out_of_hours: u64,
}

/// One breakdown entry of one (region, line, hour).
#[derive(Debug, clickhouse::Row, Deserialize)]
struct StoredBreakdown {
    region: u8,
    line: String,
    hour: u32,
    name: String,
    calls: u64,
}

impl ClickHouse {
    /// A client for `cfg` (validation off: Debian's 18.16 cannot describe tables the way
    /// the crate expects; rows are typed on our side).
    ///
    /// Every insert into a Distributed table returns only once its shard holds it
    /// (`insert_distributed_sync`), so a position read afterwards sees it. With
    /// `insert_quorum` it returns only once that many replicas of the shard hold it, and
    /// every read is `select_sequential_consistency`: a replica lacking a confirmed insert
    /// refuses (Code 289) instead of answering with stale positions.
    pub fn new(cfg: ClickHouseConfig) -> Self {
        let mut client = clickhouse::Client::default()
            .with_url(&cfg.url)
            .with_user(&cfg.user)
            .with_validation(false)
            .with_setting("insert_distributed_sync", "1");
        if let Some(p) = &cfg.password {
            client = client.with_password(p);
        }
        if cfg.insert_quorum > 0 {
            client = client
                .with_setting("insert_quorum", cfg.insert_quorum.to_string())
                // An insert waits on the server for its quorum until the lagging replica
                // is back, however long that takes (our client stops waiting after its
                // HTTP timeout; the position check then decides). Not ClickHouse's 600 s:
                // on 18.16 a quorum that times out stops blocking the next quorum insert
                // while its part stays, unconfirmed, and replicates later — a new owner
                // of the partition, not seeing it, would count its offsets again (seen in
                // tests/cluster.rs). Pending, it keeps the shard's quorum inserts in order.
                .with_setting("insert_quorum_timeout", QUORUM_WAIT_MS.to_string())
                .with_setting("select_sequential_consistency", "1");
        }
        ClickHouse { cfg, client }
    }

    /// How `counters_log` is laid out ([`Layout`]).
    pub async fn layout(&self) -> Result<Layout> {
        let engine: Vec<String> = self
            .client
            .query("SELECT engine_full FROM system.tables WHERE database = ? AND name = 'counters_log'")
            .bind(&self.cfg.database)
            .fetch_all()
            .await
            .map_err(|e| explain(e, &self.cfg, "reading the layout of counters_log"))?;
        let Some(args) = engine.first().and_then(|e| e.strip_prefix("Distributed(")) else {
            return Ok(Layout::default());
        };
        let args: Vec<&str> = args.trim_end_matches(')').split(',').map(|a| a.trim().trim_matches('\'')).collect();
        let (cluster, key) = (args.first().copied().unwrap_or_default(), args.get(3).copied().unwrap_or_default());
        if key != "kafka_partition" {
            anyhow::bail!(
                "{}.counters_log is a Distributed table sharded by `{key}`: cdrflow needs `kafka_partition`, so that each flush stays on one shard; create it with `cdrflow migrate --cluster`",
                self.cfg.database
            );
        }
        let shards: Vec<(u32, u32, u64)> = self
            .client
            .query("SELECT shard_num, any(shard_weight), count() FROM system.clusters WHERE cluster = ? GROUP BY shard_num ORDER BY shard_num")
            .bind(cluster)
            .fetch_all()
            .await
            .map_err(|e| explain(e, &self.cfg, "reading the cluster's shards"))?;
        if shards.is_empty() {
            anyhow::bail!(
                "counters_log is distributed over cluster {cluster}, which this server's remote_servers does not define"
            );
        }
        let slot_to_shard = shards.iter().flat_map(|(n, w, _)| std::iter::repeat_n(*n, (*w).max(1) as usize)).collect();
        let replicas = shards.iter().map(|s| s.2 as usize).max().unwrap_or(1);
        Ok(Layout { slot_to_shard, replicas })
    }

    /// The settings this client uses.
    pub fn config(&self) -> &ClickHouseConfig {
        &self.cfg
    }

    /// `database.table`; both are identifiers we checked, so they need no escaping.
    fn table(&self, name: &str) -> String {
        format!("{}.{name}", self.cfg.database)
    }

    /// Checks that the server answers.
    pub async fn ping(&self) -> Result<()> {
        self.client.query("SELECT 1").execute().await.map_err(|e| explain(e, &self.cfg, "answering SELECT 1"))
    }

    /// Applies the migrations not yet applied; returns the versions it applied.
    pub async fn migrate(&self) -> Result<Vec<u32>> {
        self.migrate_on(None).await
    }

    /// [`migrate`](Self::migrate) in the cluster layout of [`sql::for_cluster`] when
    /// `cluster` is given (ON CLUSTER, Replicated + Distributed tables).
    ///
    /// A run interrupted anywhere (killed, the server gone) can be run again and finishes:
    /// every statement is applied by `apply`, which makes each one safe to repeat.
    /// A migration is recorded in `schema_migrations` after its last statement.
    pub async fn migrate_on(&self, cluster: Option<&str>) -> Result<Vec<u32>> {
        let db = &self.cfg.database;
        let layout = |text: &str| match cluster {
            None => sql::statements(&sql::for_database(text, db)),
            Some(c) => sql::for_cluster(&sql::for_database(text, db), c),
        };
        let mut run = 0;
        for stmt in layout(sql::BOOTSTRAP) {
            self.apply(&stmt, cluster, "creating the migrations table", &mut run).await?;
        }
        let applied: Vec<u32> = self
            .client
            .query(&format!("SELECT version FROM {} ORDER BY version", self.table("schema_migrations")))
            .fetch_all()
            .await
            .map_err(|e| explain(e, &self.cfg, "reading applied migrations"))?;
        let mut done = Vec::new();
        for m in sql::MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
            let doing = format!("applying migration {:03}_{}", m.version, m.name);
            for stmt in layout(m.sql) {
                self.apply(&stmt, cluster, &doing, &mut run).await?;
            }
            let mut ins = self.client.insert_unescaped::<MigrationRow>(&self.table("schema_migrations")).await?;
            let now = jiff::Timestamp::now().as_second() as u32;
            ins.write(&MigrationRow { version: m.version, name: m.name.to_owned(), applied_at: now }).await?;
            ins.end().await.map_err(|e| explain(e, &self.cfg, "recording a migration"))?;
            tracing::info!(version = m.version, name = m.name, database = db, "migration applied");
            done.push(m.version);
        }
        self.fill_regions().await?;
        Ok(done)
    }

    /// Runs one migration statement so that it can be run again after any interruption:
    /// `CREATE … IF NOT EXISTS` and `DROP … IF EXISTS` are idempotent as they are; an
    /// `ALTER TABLE … ADD COLUMN` is skipped when the column is already there (on every
    /// shard, on a cluster: 18.16 has no `ADD COLUMN IF NOT EXISTS`), and a failed one
    /// counts as done if the column is there everywhere by then (an `ON CLUSTER` ALTER that
    /// had reached some shards before). A `DROP TABLE` is refused on anything but a view or
    /// a Distributed table, which hold no data: a migration never drops counters.
    ///
    /// `CDRFLOW_MIGRATE_CRASH_AFTER=N` aborts the process right after the N-th statement of
    /// the run, as a kill would: the test of resuming an interrupted migration uses it.
    async fn apply(&self, stmt: &str, cluster: Option<&str>, doing: &str, run: &mut usize) -> Result<()> {
        let added = sql::added_column(stmt);
        let skip = match added {
            Some((table, column)) => self.column_everywhere(table, column, cluster).await?,
            None => false,
        };
        if let Some(table) = sql::dropped_table(stmt) {
            self.check_droppable(table).await?;
        }
        if skip {
            tracing::info!(statement = stmt.lines().next().unwrap_or_default(), "already applied");
        } else if let Err(e) = self.client.query(stmt).execute().await {
            let e = explain(e, &self.cfg, doing);
            match added {
                Some((table, column)) if self.column_everywhere(table, column, cluster).await.unwrap_or(false) => {
                    tracing::warn!(error = format!("{e:#}"), "the column is there everywhere now; going on");
                }
                _ => return Err(e),
            }
        }
        *run += 1;
        if std::env::var("CDRFLOW_MIGRATE_CRASH_AFTER").is_ok_and(|n| n.parse() == Ok(*run)) {
            eprintln!("CDRFLOW_MIGRATE_CRASH_AFTER={run}: aborting after statement {run}, as a kill would");
            std::process::abort();
        }
        Ok(())
    }

    /// Whether `column` of `table` (`DB.TABLE`) exists here, or on a cluster, on one replica
    /// of every shard.
    async fn column_everywhere(&self, table: &str, column: &str, cluster: Option<&str>) -> Result<bool> {
        let (db, name) = table.split_once('.').context("tables are named DB.TABLE")?;
        let doing = "checking whether a column exists";
        let (have, want): (u64, u64) = match cluster {
            None => {
                let n: u64 = self
                    .client
                    .query("SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?")
                    .bind(db)
                    .bind(name)
                    .bind(column)
                    .fetch_one()
                    .await
                    .map_err(|e| explain(e, &self.cfg, doing))?;
                (n, 1)
            }
            Some(c) => {
                let have: u64 = self
                    .client
                    .query(&format!(
                        "SELECT count() FROM cluster('{c}', system, columns) WHERE database = ? AND table = ? AND name = ?"
                    ))
                    .bind(db)
                    .bind(name)
                    .bind(column)
                    .fetch_one()
                    .await
                    .map_err(|e| explain(e, &self.cfg, doing))?;
                let shards: u64 = self
                    .client
                    .query("SELECT uniqExact(shard_num) FROM system.clusters WHERE cluster = ?")
                    .bind(c)
                    .fetch_one()
                    .await
                    .map_err(|e| explain(e, &self.cfg, doing))?;
                (have, shards.max(1))
            }
        };
        Ok(have >= want)
    }

    /// Refuses to drop a table that holds data (anything but a view or a Distributed table).
    async fn check_droppable(&self, table: &str) -> Result<()> {
        let (db, name) = table.split_once('.').context("tables are named DB.TABLE")?;
        let engine: Vec<String> = self
            .client
            .query("SELECT engine FROM system.tables WHERE database = ? AND name = ?")
            .bind(db)
            .bind(name)
            .fetch_all()
            .await
            .map_err(|e| explain(e, &self.cfg, "checking a table before dropping it"))?;
        match engine.first().map(String::as_str) {
            None | Some("View") | Some("Distributed") => Ok(()),
            Some(other) => anyhow::bail!(
                "refusing to drop {table} on ClickHouse at {}: it is a {other} table and holds data, and migrations only drop views and Distributed tables; if it is yours, rename it out of the way",
                self.cfg.url
            ),
        }
    }

    async fn fill_regions(&self) -> Result<()> {
        let n: u64 = self
            .client
            .query(&format!("SELECT count() FROM {}", self.table("regions")))
            .fetch_one()
            .await
            .map_err(|e| explain(e, &self.cfg, "counting regions"))?;
        if n > 0 {
            return Ok(());
        }
        let mut ins = self.client.insert_unescaped::<RegionRow<'_>>(&self.table("regions")).await?;
        for r in Regions::get().all() {
            ins.write(&RegionRow {
                region: r.code.0,
                name_ru: r.name_ru,
                name_en: r.name_en,
                time_zone: r.time_zone_name,
            })
            .await?;
        }
        ins.end().await.map_err(|e| explain(e, &self.cfg, "filling the regions table"))
    }

    /// Whether the database exists.
    pub async fn database_exists(&self) -> Result<bool> {
        let n: u64 = self
            .client
            .query("SELECT count() FROM system.databases WHERE name = ?")
            .bind(&self.cfg.database)
            .fetch_one()
            .await
            .map_err(|e| explain(e, &self.cfg, "looking up the database"))?;
        Ok(n > 0)
    }

    /// Drops the whole database: only the demo calls it, on the database it created itself
    /// in the same run (workers and tools never drop anything).
    pub async fn drop_database(&self) -> Result<()> {
        self.client
            .query(&format!("DROP DATABASE IF EXISTS {}", self.cfg.database))
            .execute()
            .await
            .map_err(|e| explain(e, &self.cfg, "dropping the demo database"))
    }

    /// Inserts one flush unit: one INSERT, one block, one part (see the module docs), as
    /// query `query_id`, so that whether the server still runs it can be asked
    /// ([`Self::running`]) if the client gives up on it. The block holds every row however
    /// many there are: past the server's `max_insert_block_size` (1 048 576 by default,
    /// lower in some profiles) it would cut the insert into parts that land one by one.
    pub async fn insert_unit(&self, query_id: &str, rows: Vec<CounterRow<'_>>) -> Result<()> {
        let block = (rows.len() + 1).max(1_048_576).to_string();
        let mut ins = self
            .client
            .insert_unescaped::<CounterRow<'static>>(&self.table("counters_log"))
            .await?
            .with_setting("query_id", query_id)
            .with_setting("max_insert_block_size", block)
            .with_timeouts(Some(Duration::from_secs(30)), Some(self.cfg.insert_timeout));
        for r in rows {
            ins.write(&r).await.map_err(|e| explain(e, &self.cfg, "inserting counters"))?;
        }
        ins.end().await.map_err(|e| explain(e, &self.cfg, "inserting counters"))
    }

    /// A read the aggregator waits on (positions, its window of calls, whether an insert
    /// still runs), bounded by [`ClickHouseConfig::insert_timeout`]: a connection that stops
    /// answering without being closed (a server or link gone silent) would otherwise hold
    /// the worker for good, its flushes or its rebalance with it.
    async fn within<T>(&self, doing: &str, read: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.cfg.insert_timeout, read).await {
            Ok(answer) => answer,
            Err(_) => Err(anyhow!(
                "ClickHouse at {} did not answer within {} s while {doing}: is it overloaded, or the network to it cut? (--insert-timeout-s sets the wait)",
                self.cfg.url,
                self.cfg.insert_timeout.as_secs()
            )),
        }
    }

    /// How many queries the server runs whose id begins with `prefix` (`system.processes`
    /// of the server answering, as [`Self::running`]).
    pub async fn running_from(&self, prefix: &str) -> Result<u64> {
        let doing = "asking whether this aggregator's inserts still run";
        self.within(doing, async {
            self.client
                .query("SELECT count() FROM system.processes WHERE substring(query_id, 1, length(?)) = ?")
                .bind(prefix)
                .bind(prefix)
                .fetch_one()
                .await
                .map_err(|e| explain(e, &self.cfg, doing))
        })
        .await
    }

    /// Whether the server still runs query `query_id` (`system.processes` of the server
    /// answering): an insert the client gave up on may still be read and written, and land
    /// after positions read meanwhile.
    pub async fn running(&self, query_id: &str) -> Result<bool> {
        let doing = "asking whether an earlier insert still runs";
        let n: u64 = self
            .within(doing, async {
                self.client
                    .query("SELECT count() FROM system.processes WHERE query_id = ?")
                    .bind(query_id)
                    .fetch_one()
                    .await
                    .map_err(|e| explain(e, &self.cfg, doing))
            })
            .await?;
        Ok(n > 0)
    }

    /// The next offset to read per partition for this group and topic.
    pub async fn positions(&self, group: &str, topic: &str) -> Result<HashMap<i32, i64>> {
        self.positions_where(group, topic, "").await
    }

    /// [`Self::positions`] of the partitions in `units` only, each given with the first
    /// offset of its unit: the position ClickHouse held when the unit began, or one it has
    /// since left behind (positions only advance). So the answer lies in the rows from that
    /// offset's predecessor on — the last of the unit before — and `counters_log`'s order
    /// (group, topic, partition, last_offset) finds those by the primary key, without
    /// reading the rest of the log, which grows by every flush. A partition with no such row
    /// has none at all (it is absent, as from [`Self::positions`]). With 50 M rows of
    /// history on 18.16: 0.3–0.5 s against 1.3–2.3 s (`benches/RESULTS.md` §15).
    pub async fn positions_of_units(
        &self,
        group: &str,
        topic: &str,
        units: &[(i32, i64)],
    ) -> Result<HashMap<i32, i64>> {
        if units.is_empty() {
            return Ok(HashMap::new());
        }
        let tails = units
            .iter()
            .map(|&(p, first)| format!("(kafka_partition = {p} AND last_offset >= {})", (first - 1).max(0)))
            .collect::<Vec<_>>()
            .join(" OR ");
        self.positions_where(group, topic, &format!("AND ({tails})")).await
    }

    /// The next offset to read per partition for this group and topic, of the log's rows
    /// that also meet `and` (SQL starting with `AND`, or empty for every row).
    async fn positions_where(&self, group: &str, topic: &str, and: &str) -> Result<HashMap<i32, i64>> {
        let doing = "reading partition positions";
        let rows: Vec<Position> = self
            .within(doing, async {
                self.client
                    .query(&format!(
                        "SELECT kafka_partition, max(last_offset) AS last FROM {} WHERE consumer_group = ? AND topic = ? {and} GROUP BY kafka_partition",
                        self.table("counters_log")
                    ))
                    .bind(group)
                    .bind(topic)
                    .fetch_all()
                    .await
                    .map_err(|e| explain(e, &self.cfg, doing))
            })
            .await?;
        Ok(rows.into_iter().map(|p| (p.kafka_partition as i32, p.last as i64 + 1)).collect())
    }

    /// The calls each of `partitions` counted within `window_hours` of its own newest
    /// counted call: (partition, start hour, call key), for their
    /// [`crate::rollup::CountedCalls`]. Two requests whatever the number of partitions (one
    /// when none has counted anything yet): each partition's newest hour, then the calls of
    /// the oldest window among them, each partition's kept from its own window on. One
    /// request per partition, even 8 at a time, took 0.08–0.82 s for 64 partitions before a
    /// worker could consume (`benches/RESULTS.md` §13).
    pub async fn recent_calls(
        &self,
        group: &str,
        topic: &str,
        partitions: &[i32],
        window_hours: u32,
    ) -> Result<Vec<(i32, i64, u64)>> {
        let read = self.recent_calls_unbounded(group, topic, partitions, window_hours);
        self.within("reading the calls counted recently", read).await
    }

    /// [`Self::recent_calls`], however long ClickHouse takes.
    async fn recent_calls_unbounded(
        &self,
        group: &str,
        topic: &str,
        partitions: &[i32],
        window_hours: u32,
    ) -> Result<Vec<(i32, i64, u64)>> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let log = self.table("counters_log");
        let wanted: Vec<u16> = partitions.iter().map(|&p| p as u16).collect();
        let newest: Vec<(u16, u32)> = self
            .client
            .query(&format!(
                "SELECT kafka_partition, toUInt32(max(hour)) FROM {log}
                 WHERE consumer_group = ? AND topic = ? AND has(?, kafka_partition) AND region != 0
                 GROUP BY kafka_partition"
            ))
            .bind(group)
            .bind(topic)
            .bind(&wanted)
            .fetch_all()
            .await
            .map_err(|e| explain(e, &self.cfg, "reading the newest hour each partition counted"))?;
        let window = i64::from(window_hours) * 3600;
        let from: HashMap<u16, i64> = newest.iter().map(|&(p, h)| (p, i64::from(h) - window)).collect();
        let Some(&oldest) = from.values().min() else { return Ok(Vec::new()) };
        let counted: Vec<u16> = from.keys().copied().collect();
        let rows: Vec<(u16, u32, u64)> = self
            .client
            .query(&format!(
                "SELECT kafka_partition, toUInt32(hour), call FROM {log} ARRAY JOIN call_ids AS call
                 WHERE consumer_group = ? AND topic = ? AND has(?, kafka_partition) AND region != 0
                   AND hour >= ?"
            ))
            .bind(group)
            .bind(topic)
            .bind(&counted)
            .bind(oldest.max(0) as u64)
            .fetch_all()
            .await
            .map_err(|e| explain(e, &self.cfg, "reading the calls counted recently"))?;
        Ok(rows
            .into_iter()
            .filter(|&(p, h, _)| i64::from(h) >= from[&p])
            .map(|(p, h, c)| (i32::from(p), i64::from(h), c))
            .collect())
    }

    /// Counters per (region, line, hour): one group's streaming rows (`Some(group)`), or
    /// what dashboards see (`None`: `counters_current`, streaming and rebuilt hours).
    pub async fn stored_counters(&self, group: Option<&str>) -> Result<Vec<(u8, String, i64, Counters)>> {
        match group {
            Some(_) => self.read_counters(&self.table("counters_log"), "AND consumer_group = ?", group).await,
            None => self.read_counters(&self.table("counters_current"), "", None).await,
        }
    }

    /// What dashboards see for UTC hours `[from, to)`, optionally of one region.
    pub async fn current_counters(
        &self,
        from: i64,
        to: i64,
        region: Option<u8>,
    ) -> Result<Vec<(u8, String, i64, Counters)>> {
        let filter = hours_filter(from, to, region);
        self.read_counters(&self.table("counters_current"), &filter, None).await
    }

    /// Every stored (region, line id, UTC hour) of `table` with its counters, summed over
    /// flushes; only this consumer group's rows if given. (Breakdowns are summed through
    /// `ARRAY JOIN`: 18.16's `sumMap` takes numeric keys only.) `filter` is SQL made of
    /// numbers only; `group` binds its `?`, if any.
    async fn read_counters(
        &self,
        from: &str,
        filter: &str,
        group: Option<&str>,
    ) -> Result<Vec<(u8, String, i64, Counters)>> {
        let q = format!(
            "SELECT region, line, hour, sum(offered) AS offered, sum(answered) AS answered, sum(abandoned) AS abandoned,
                sum(short_abandoned) AS short_abandoned, sum(unanswered) AS unanswered,
                sum(answered_within_sl) AS answered_within_sl, sum(abandoned_after_sl) AS abandoned_after_sl,
                sum(wait_sum_ms) AS wait_sum_ms, max(wait_max_ms) AS wait_max_ms, sum(talk_sum_ms) AS talk_sum_ms,
                sum(transferred_out) AS transferred_out, sum(out_of_hours) AS out_of_hours
             FROM {from} WHERE region != 0 {filter} GROUP BY region, line, hour HAVING offered > 0
             ORDER BY region, line, hour",
        );
        let mut query = self.client.query(&q);
        if let Some(g) = group {
            query = query.bind(g);
        }
        let rows: Vec<StoredCounters> =
            query.fetch_all().await.map_err(|e| explain(e, &self.cfg, "reading counters"))?;
        let mut out: std::collections::BTreeMap<(u8, String, u32), Counters> = rows
            .into_iter()
            .map(|r| {
                let c = Counters {
                    offered: r.offered,
                    answered: r.answered,
                    abandoned: r.abandoned,
                    short_abandoned: r.short_abandoned,
                    unanswered: r.unanswered,
                    answered_within_sl: r.answered_within_sl,
                    abandoned_after_sl: r.abandoned_after_sl,
                    wait_sum_ms: r.wait_sum_ms,
                    wait_max_ms: r.wait_max_ms,
                    talk_sum_ms: r.talk_sum_ms,
                    transferred_out: r.transferred_out,
                    out_of_hours: r.out_of_hours,
                    ..Counters::default()
                };
                ((r.region, r.line, r.hour), c)
            })
            .collect();
        let age_names = Counters::age_band_names();
        let channel_names = Counters::channel_names();
        for (names, counts) in
            [("topic_names", "topic_calls"), ("age_band_names", "age_band_calls"), ("channel_names", "channel_calls")]
        {
            let q = format!(
                "SELECT region, line, hour, name, sum(count) AS calls FROM {from} ARRAY JOIN {names} AS name, {counts} AS count
                 WHERE region != 0 {filter} GROUP BY region, line, hour, name"
            );
            let mut query = self.client.query(&q);
            if let Some(g) = group {
                query = query.bind(g);
            }
            let parts: Vec<StoredBreakdown> =
                query.fetch_all().await.map_err(|e| explain(e, &self.cfg, "reading breakdowns"))?;
            for b in parts {
                let Some(c) = out.get_mut(&(b.region, b.line, b.hour)) else { continue };
                match names {
                    "topic_names" => {
                        c.by_topic.set(&b.name, b.calls);
                    }
                    "age_band_names" => {
                        if let Some(i) = age_names.iter().position(|n| *n == b.name) {
                            c.by_age_band[i] = b.calls;
                        }
                    }
                    _ => {
                        if let Some(i) = channel_names.iter().position(|n| *n == b.name) {
                            c.by_channel[i] = b.calls;
                        }
                    }
                }
            }
        }
        Ok(out.into_iter().map(|((region, line, hour), c)| (region, line, hour as i64, c)).collect())
    }

    /// Calls per (region, line, UTC hour) the dashboards count for hours `[from, to)`
    /// (`counters_current`), cells a rebuild emptied included (with 0).
    pub async fn current_offered(&self, from: i64, to: i64, region: Option<u8>) -> Result<Vec<(u8, String, i64, u64)>> {
        let rows: Vec<(u8, String, u32, u64)> = self
            .client
            .query(&format!(
                "SELECT region, line, toUInt32(hour), sum(offered) FROM {} WHERE region != 0 {} GROUP BY region, line, hour",
                self.table("counters_current"),
                hours_filter(from, to, region)
            ))
            .fetch_all()
            .await
            .map_err(|e| explain(e, &self.cfg, "reading the counters a rebuild would replace"))?;
        Ok(rows.into_iter().map(|(r, l, h, o)| (r, l, h as i64, o)).collect())
    }

    /// Where the streaming counts of each (region, line, hour) in `[from, to)` came from:
    /// per topic and Kafka partition, the offsets of the flushes that counted it.
    pub async fn cell_sources(&self, from: i64, to: i64, region: Option<u8>) -> Result<Vec<CellSource>> {
        self.client
            .query(&format!(
                "SELECT region, line, toUInt32(hour) AS hour, topic, kafka_partition,
                        min(first_offset) AS first_offset, max(last_offset) AS last_offset
                 FROM {} WHERE region != 0 {} GROUP BY region, line, hour, topic, kafka_partition",
                self.table("counters_log"),
                hours_filter(from, to, region)
            ))
            .fetch_all()
            .await
            .map_err(|e| explain(e, &self.cfg, "reading where the counters came from"))
    }

    /// Checks that the database holds cdrflow's schema at the version this build needs;
    /// the error says to run `cdrflow migrate` (workers and reports would otherwise loop on
    /// or fail with a missing table).
    pub async fn check_schema(&self) -> Result<()> {
        let db = &self.cfg.database;
        let fix = format!("run `cdrflow migrate --clickhouse {} --database {db}` first", self.cfg.url);
        let tables: u64 = self
            .client
            .query("SELECT count() FROM system.tables WHERE database = ? AND name = 'schema_migrations'")
            .bind(db)
            .fetch_one()
            .await
            .map_err(|e| explain(e, &self.cfg, "looking for cdrflow's schema"))?;
        if tables == 0 {
            anyhow::bail!("ClickHouse at {} has no cdrflow schema in database {db}: {fix}", self.cfg.url);
        }
        let applied: Vec<u32> = self
            .client
            .query(&format!("SELECT DISTINCT version FROM {} ORDER BY version", self.table("schema_migrations")))
            .fetch_all()
            .await
            .map_err(|e| explain(e, &self.cfg, "reading applied migrations"))?;
        let missing: Vec<String> = sql::MIGRATIONS
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .map(|m| format!("{:03}_{}", m.version, m.name))
            .collect();
        if !missing.is_empty() {
            anyhow::bail!("database {db} at {} lacks migrations {}: {fix}", self.cfg.url, missing.join(", "));
        }
        Ok(())
    }

    /// Cells that some rebuild wrote.
    pub async fn rebuilt_cells(&self) -> Result<u64> {
        self.client
            .query(&format!(
                "SELECT count() FROM (SELECT DISTINCT region, line, hour FROM {})",
                self.table("counters_rebuilt")
            ))
            .fetch_one()
            .await
            .map_err(|e| explain(e, &self.cfg, "counting rebuilt cells"))
    }

    /// A rebuild id (its rows' `flushed_at`): now, or later than every earlier rebuild.
    pub async fn next_rebuild_id(&self) -> Result<u32> {
        let last: u32 = self
            .client
            .query(&format!("SELECT toUInt32(max(flushed_at)) FROM {}", self.table("counters_rebuilt")))
            .fetch_one()
            .await
            .map_err(|e| explain(e, &self.cfg, "reading the last rebuild"))?;
        Ok((jiff::Timestamp::now().as_second() as u32).max(last + 1))
    }

    /// Inserts a rebuild's rows as ONE block (one part), however many there are.
    pub async fn insert_rebuild(&self, rows: &[CounterRow<'_>]) -> Result<()> {
        let block = (rows.len() + 1).max(1_048_576).to_string();
        let client = self.client.clone().with_setting("max_insert_block_size", block);
        let mut ins = client
            .insert_unescaped::<CounterRow<'static>>(&self.table("counters_rebuilt"))
            .await?
            .with_timeouts(Some(Duration::from_secs(60)), Some(Duration::from_secs(600)));
        for r in rows {
            ins.write(r).await.map_err(|e| explain(e, &self.cfg, "inserting a rebuild"))?;
        }
        ins.end().await.map_err(|e| explain(e, &self.cfg, "inserting a rebuild"))
    }

    /// The flushes in the streaming log of `group`: one entry per (partition, first, last
    /// offset, flush time) with its rows and distinct cells — a unit inserted twice shows
    /// as rows > cells.
    pub async fn log_units(&self, group: &str, topic: &str) -> Result<Vec<LogUnit>> {
        self.client
            .query(&format!(
                "SELECT kafka_partition, first_offset, last_offset, count() AS rows,
                        uniqExact(region, line, hour) AS cells
                 FROM {} WHERE consumer_group = ? AND topic = ?
                 GROUP BY kafka_partition, first_offset, last_offset, flushed_at
                 ORDER BY kafka_partition, first_offset, last_offset",
                self.table("counters_log")
            ))
            .bind(group)
            .bind(topic)
            .fetch_all()
            .await
            .map_err(|e| explain(e, &self.cfg, "reading the streaming log's units"))
    }

    /// The consumer groups with flushes of `topic` in the streaming log.
    pub async fn log_groups(&self, topic: &str) -> Result<Vec<String>> {
        self.client
            .query(&format!(
                "SELECT DISTINCT consumer_group FROM {} WHERE topic = ? ORDER BY consumer_group",
                self.table("counters_log")
            ))
            .bind(topic)
            .fetch_all()
            .await
            .map_err(|e| explain(e, &self.cfg, "listing the groups of the streaming log"))
    }

    /// Runs a named dashboard query from `schemas/sql/dashboards.sql`; rows as JSON objects.
    pub async fn dashboard(&self, name: &str, params: &[(&str, Param)]) -> Result<Vec<serde_json::Value>> {
        let q = sql::dashboard_queries()
            .into_iter()
            .find(|q| q.name == name)
            .with_context(|| format!("no dashboard query named {name}"))?;
        let text = sql::render(&sql::for_database(&q.sql, &self.cfg.database), params).map_err(anyhow::Error::msg)?;
        let bytes = self
            .client
            .query(&text)
            .fetch_bytes("JSONEachRow")
            .map_err(|e| explain(e, &self.cfg, &format!("running {name}")))?
            .collect()
            .await
            .map_err(|e| explain(e, &self.cfg, &format!("running {name}")))?;
        bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).with_context(|| format!("reading a row of {name}")))
            .collect()
    }
}

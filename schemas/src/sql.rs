//! The ClickHouse SQL, kept in `schemas/sql/` and compiled in: the versioned migrations
//! (`migrations/NNN_name.sql`) and the named dashboard queries (`dashboards.sql`).
//! `cdrflow migrate`, the tests and CI's modern-engine check all read these same files.

/// One migration: its version, name and statements.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Applied in ascending order; recorded in `cdrflow.schema_migrations`.
    pub version: u32,
    /// Short name.
    pub name: &'static str,
    /// The file's text.
    pub sql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "counters", sql: include_str!("../sql/migrations/001_counters.sql") },
    Migration {
        version: 2,
        name: "versions_and_rebuilds",
        sql: include_str!("../sql/migrations/002_versions_and_rebuilds.sql"),
    },
];

/// Creates the database and `schema_migrations`; run before the migrations.
pub const BOOTSTRAP: &str = include_str!("../sql/bootstrap.sql");

/// The files name the database `cdrflow`; this puts another name in its place (tests use
/// a database each). `database` must be an identifier (checked by the caller's config).
pub fn for_database(sql: &str, database: &str) -> String {
    sql.replace("DATABASE IF NOT EXISTS cdrflow;", &format!("DATABASE IF NOT EXISTS {database};"))
        .replace("cdrflow.", &format!("{database}."))
}

/// The dashboard queries file.
pub const DASHBOARDS: &str = include_str!("../sql/dashboards.sql");

/// Splits SQL text into statements: a statement ends with a line ending in `;`; lines
/// starting with `--` are comments.
pub fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in sql.lines() {
        if line.trim_start().starts_with("--") {
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
        if line.trim_end().ends_with(';') {
            let s = cur.trim().trim_end_matches(';').trim().to_owned();
            if !s.is_empty() {
                out.push(s);
            }
            cur.clear();
        }
    }
    let rest = cur.trim();
    if !rest.is_empty() {
        out.push(rest.to_owned());
    }
    out
}

/// A named dashboard query.
#[derive(Debug, Clone)]
pub struct DashboardQuery {
    /// Its name (`-- name: …`).
    pub name: String,
    /// What it shows (the comment lines under the name).
    pub doc: String,
    /// The SQL with `{name:Type}` parameters.
    pub sql: String,
}

/// The dashboard queries, in file order.
pub fn dashboard_queries() -> Vec<DashboardQuery> {
    let mut out: Vec<DashboardQuery> = Vec::new();
    for block in DASHBOARDS.split("-- name: ").skip(1) {
        let (name, rest) = block.split_once('\n').unwrap_or((block, ""));
        let doc: Vec<&str> =
            rest.lines().take_while(|l| l.starts_with("--")).map(|l| l.trim_start_matches("--").trim()).collect();
        let sql = statements(rest).into_iter().next().unwrap_or_default();
        out.push(DashboardQuery { name: name.trim().to_owned(), doc: doc.join(" "), sql });
    }
    out
}

/// A typed query parameter.
#[derive(Debug, Clone)]
pub enum Param {
    /// A `DateTime` (UTC seconds since the epoch).
    DateTime(i64),
    /// A `UInt32` or `UInt8`.
    UInt(u64),
    /// A `String` that is a code (a line id, say): letters, digits, `_`, `-`, `.` only, at
    /// most 64 bytes; anything else is refused, so no text can change the statement.
    Code(String),
}

/// Replaces each `{name:Type}` with a literal rendered from a typed value, for servers
/// older than query parameters (18.16). Only numbers and formatted instants are ever
/// written, so no text can change the statement.
pub fn render(sql: &str, params: &[(&str, Param)]) -> Result<String, String> {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').ok_or("unclosed {")? + open;
        let inner = &rest[open + 1..close];
        let (name, ty) = inner.split_once(':').ok_or_else(|| format!("parameter `{inner}` has no type"))?;
        let value = params
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .ok_or_else(|| format!("no value for parameter `{name}`"))?;
        match (ty, value) {
            ("DateTime", Param::DateTime(secs)) => {
                let mut buf = [0u8; 19];
                crate::time::format_wall(*secs, b' ', &mut buf);
                out.push_str("toDateTime('");
                out.push_str(std::str::from_utf8(&buf).expect("ASCII"));
                out.push_str("', 'UTC')");
            }
            ("UInt32" | "UInt8" | "UInt64", Param::UInt(v)) => out.push_str(&v.to_string()),
            ("String", Param::Code(v)) => {
                if v.len() > 64 || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)) {
                    return Err(format!("parameter `{name}`: `{v}` is not a code (letters, digits, _ - . only)"));
                }
                out.push('\'');
                out.push_str(v);
                out.push('\'');
            }
            _ => return Err(format!("parameter `{name}` of type {ty} got {value:?}")),
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The same schema for a ClickHouse cluster, statement by statement, from the single-node
/// SQL (after [`for_database`]): one definition, two layouts.
///
/// - `CREATE DATABASE` and every view and `DROP` run `ON CLUSTER`.
/// - Each `MergeTree` table `T` becomes `T_local`, a `ReplicatedMergeTree` on every replica
///   of every shard (ZooKeeper/Keeper path `/clickhouse/tables/{shard}/DB/T`, replica
///   `{replica}`: the servers' macros), plus `T`, a `Distributed` table over them with the
///   same name the single-node schema uses, so workers, views and dashboards are unchanged.
/// - The sharding keys keep each atomic insert on one shard: a flush of the aggregator holds
///   one Kafka partition (`kafka_partition`), a rebuild one id (`flushed_at`). With
///   `insert_distributed_sync = 1` in the workers' profile (`distributed_foreground_insert`
///   in new releases) an insert returns once its shard has it, so the positions read back
///   from `counters_log` are as exact as on one node.
/// - `ALTER TABLE` runs on both; `IN (SELECT …)` over distributed tables becomes
///   `GLOBAL IN`, which the cluster needs and which means the same.
pub fn for_cluster(sql: &str, cluster: &str) -> Vec<String> {
    let on = format!("ON CLUSTER '{cluster}'");
    let mut out = Vec::new();
    for stmt in statements(sql) {
        let head: Vec<&str> = stmt.split_whitespace().take(6).collect();
        match head.as_slice() {
            ["CREATE", "DATABASE", "IF", "NOT", "EXISTS", db] => {
                out.push(format!("CREATE DATABASE IF NOT EXISTS {db} {on}"));
            }
            ["CREATE", "TABLE", "IF", "NOT", "EXISTS", name] => {
                let name = name.trim_end_matches('(').to_owned();
                let (db, table) = name.split_once('.').expect("tables are named DB.TABLE");
                let path = format!("ReplicatedMergeTree('/clickhouse/tables/{{shard}}/{db}/{table}', '{{replica}}')");
                let local = format!("{name}_local");
                if let Some(pos) = stmt.find("ENGINE = MergeTree") {
                    let tail = stmt[pos + "ENGINE = MergeTree".len()..].to_owned();
                    let columns = &stmt[stmt.find(&name).expect("name") + name.len()..pos];
                    out.push(format!(
                        "CREATE TABLE IF NOT EXISTS {local} {on}{}ENGINE = {path}{tail}",
                        columns.trim_end().to_owned() + "\n"
                    ));
                } else if let Some(src) = stmt.split(" AS ").nth(1) {
                    let src = src.trim();
                    let tail = engine_tail(src).unwrap_or_else(|| panic!("{src}: AS a MergeTree table of the schema"));
                    out.push(format!("CREATE TABLE IF NOT EXISTS {local} {on} AS {src}_local\nENGINE = {path}{tail}"));
                }
                out.push(distributed(&name, cluster));
            }
            ["ALTER", "TABLE", name, ..] => {
                // The replicated table is altered on one replica per shard and replicates;
                // the Distributed table over it holds no data and is made again from it
                // (18.16 refuses ALTER … ON CLUSTER on a Distributed table whose shards
                // replicate internally, Code 371).
                let rest = stmt.split_once(name).expect("name").1;
                out.push(format!("ALTER TABLE {name}_local {on}{rest}"));
                out.push(format!("DROP TABLE IF EXISTS {name} {on}"));
                out.push(distributed(name, cluster));
            }
            ["CREATE", "VIEW", "IF", "NOT", "EXISTS", name] => {
                let rest = stmt.split_once(name).expect("name").1;
                out.push(global_in(&format!("CREATE VIEW IF NOT EXISTS {name} {on}{rest}")));
            }
            ["DROP", "TABLE", "IF", "EXISTS", name, ..] => {
                out.push(format!("DROP TABLE IF EXISTS {name} {on}"));
            }
            _ => out.push(stmt),
        }
    }
    out
}

/// `CREATE TABLE … ENGINE = Distributed` of `name` (`DB.TABLE`) over `name_local`, sharded so
/// that one Kafka partition's flushes (`counters_log`) or one rebuild (`counters_rebuilt`)
/// stays on one shard.
fn distributed(name: &str, cluster: &str) -> String {
    let (db, table) = name.split_once('.').expect("tables are named DB.TABLE");
    let key = match table {
        "counters_log" => "kafka_partition",
        "counters_rebuilt" => "toUInt32(flushed_at)",
        _ => "rand()",
    };
    format!(
        "CREATE TABLE IF NOT EXISTS {name} ON CLUSTER '{cluster}' AS {name}_local\nENGINE = Distributed('{cluster}', {db}, {table}_local, {key})"
    )
}

/// `(DB.TABLE, column)` of an `ALTER TABLE DB.TABLE [ON CLUSTER …] ADD COLUMN column …`:
/// 18.16 has no `ADD COLUMN IF NOT EXISTS`, so the migration runner checks first.
pub fn added_column(stmt: &str) -> Option<(&str, &str)> {
    let rest = stmt.strip_prefix("ALTER TABLE ")?;
    let (table, rest) = rest.split_once(' ')?;
    let column = rest.split("ADD COLUMN ").nth(1)?.split_whitespace().next()?;
    Some((table, column))
}

/// `DB.TABLE` of a `DROP TABLE IF EXISTS DB.TABLE [ON CLUSTER …]`.
pub fn dropped_table(stmt: &str) -> Option<&str> {
    stmt.strip_prefix("DROP TABLE IF EXISTS ")?.split_whitespace().next()
}

/// What follows `ENGINE = MergeTree` in the statement that creates `table` (`DB.TABLE`).
fn engine_tail(table: &str) -> Option<String> {
    let db = table.split_once('.')?.0;
    std::iter::once(BOOTSTRAP).chain(MIGRATIONS.iter().map(|m| m.sql)).find_map(|text| {
        statements(&for_database(text, db)).into_iter().find_map(|s| {
            let created = s.strip_prefix("CREATE TABLE IF NOT EXISTS ")?.split_whitespace().next()? == table;
            let pos = s.find("ENGINE = MergeTree")?;
            created.then(|| s[pos + "ENGINE = MergeTree".len()..].to_owned())
        })
    })
}

/// `IN (SELECT` → `GLOBAL IN (SELECT` (and `NOT IN` likewise).
fn global_in(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 32);
    let mut rest = sql;
    while let Some(i) = rest.find(" IN") {
        let after = &rest[i + 3..];
        let subquery = after.trim_start().starts_with("(SELECT");
        let (before, kw) = (&rest[..i], " IN");
        if subquery {
            if let Some(b) = before.strip_suffix(" NOT") {
                out.push_str(b);
                out.push_str(" GLOBAL NOT IN");
            } else {
                out.push_str(before);
                out.push_str(" GLOBAL IN");
            }
        } else {
            out.push_str(before);
            out.push_str(kw);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Every statement of the cluster layout, in order: bootstrap, then each migration.
pub fn cluster_schema(database: &str, cluster: &str) -> Vec<String> {
    let mut out = for_cluster(&for_database(BOOTSTRAP, database), cluster);
    for m in MIGRATIONS {
        out.extend(for_cluster(&for_database(m.sql, database), cluster));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_parse_into_statements_and_named_queries() {
        let m = statements(MIGRATIONS[0].sql);
        assert!(m[0].starts_with("CREATE DATABASE"));
        assert!(m.iter().all(|s| !s.contains(';')), "one statement each");
        let q = dashboard_queries();
        let names: Vec<&str> = q.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "national_calls_per_hour",
                "region_local_day",
                "line_region_quality",
                "top_regions",
                "topic_shares",
                "age_band_shares",
                "region_quality",
                "regions",
                "lines",
                "line_hourly",
                "region_line_quality",
                "region_local_hour_profile",
                "region_topics"
            ]
        );
        assert!(q.iter().all(|q| !q.doc.is_empty() && q.sql.starts_with("SELECT")));
        let r = render(&q[0].sql, &[("from", Param::DateTime(0)), ("to", Param::DateTime(3600))]).unwrap();
        assert!(r.contains("toDateTime('1970-01-01 01:00:00', 'UTC')"), "{r}");
        assert!(render(&q[3].sql, &[("from", Param::DateTime(0))]).is_err(), "missing parameters are errors");
    }
}

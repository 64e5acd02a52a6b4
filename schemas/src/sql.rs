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
                "region_quality"
            ]
        );
        assert!(q.iter().all(|q| !q.doc.is_empty() && q.sql.starts_with("SELECT")));
        let r = render(&q[0].sql, &[("from", Param::DateTime(0)), ("to", Param::DateTime(3600))]).unwrap();
        assert!(r.contains("toDateTime('1970-01-01 01:00:00', 'UTC')"), "{r}");
        assert!(render(&q[3].sql, &[("from", Param::DateTime(0))]).is_err(), "missing parameters are errors");
    }
}

//! The provisioned Grafana dashboard (`deploy/grafana/dashboards/cdrflow.json`), made from
//! the named queries of `schemas/sql/dashboards.sql`: every panel's SQL is a named query
//! with its `{name:Type}` parameters written as the ClickHouse data source's macros and the
//! dashboard's variables. `tests/deploy.rs` checks that the committed file is what this
//! makes, maps each panel back to its named query and runs that on ClickHouse.
//!
//! Regenerate after changing a query: `CDRFLOW_BLESS=1 cargo test --test deploy grafana`.

use cdrflow_schemas::sql::dashboard_queries;
use serde_json::{Value, json};

/// Parameter ↔ Grafana spelling. `region` 0 and `line` '' mean "all" (the variables' All).
const PARAMS: &[(&str, &str)] = &[
    ("{from:DateTime}", "$__fromTime"),
    ("{to:DateTime}", "$__toTime"),
    ("{region:UInt8}", "${region}"),
    ("{line:String}", "'${line}'"),
    ("{limit:UInt32}", "${limit}"),
];

/// A named query's SQL as a panel's `rawSql`.
pub fn to_grafana(sql: &str) -> String {
    PARAMS.iter().fold(sql.to_owned(), |s, (ours, theirs)| s.replace(ours, theirs))
}

/// A panel's `rawSql` back as the named query's SQL.
pub fn from_grafana(sql: &str) -> String {
    PARAMS.iter().fold(sql.to_owned(), |s, (ours, theirs)| s.replace(theirs, ours))
}

/// The data source every panel uses (provisioned by deploy/grafana/provisioning).
fn datasource() -> Value {
    json!({ "type": "grafana-clickhouse-datasource", "uid": "clickhouse" })
}

fn query(name: &str) -> String {
    dashboard_queries()
        .into_iter()
        .find(|q| q.name == name)
        .unwrap_or_else(|| panic!("no named query `{name}` in schemas/sql/dashboards.sql"))
        .sql
}

/// One panel: `kind` is a Grafana panel type; `format` 0 is a time series, 1 a table.
fn panel(id: u32, title: &str, name: &str, kind: &str, grid: (u32, u32, u32, u32), fields: Value) -> Value {
    let doc = dashboard_queries().into_iter().find(|q| q.name == name).map(|q| q.doc).unwrap_or_default();
    let time_series = kind == "timeseries";
    json!({
        "id": id,
        "type": kind,
        "title": title,
        "description": format!("{doc} (named query `{name}`, schemas/sql/dashboards.sql)"),
        "datasource": datasource(),
        "gridPos": { "x": grid.0, "y": grid.1, "w": grid.2, "h": grid.3 },
        "fieldConfig": { "defaults": fields, "overrides": [] },
        "options": {},
        "targets": [{
            "refId": "A",
            "datasource": datasource(),
            "editorType": "sql",
            "queryType": if time_series { "timeseries" } else { "table" },
            "format": if time_series { 0 } else { 1 },
            "rawSql": to_grafana(&query(name)),
            "meta": { "cdrflowQuery": name },
        }],
    })
}

/// The dashboard for federal users.
pub fn dashboard() -> Value {
    let percent = json!({ "unit": "percentunit", "min": 0, "max": 1 });
    let panels = vec![
        panel(
            1,
            "National calls per hour",
            "national_calls_per_hour",
            "timeseries",
            (0, 0, 24, 8),
            json!({ "unit": "short" }),
        ),
        panel(
            2,
            "Regions: offered, answered, abandon rate, service level, ASA",
            "region_quality",
            "table",
            (0, 8, 24, 10),
            json!({}),
        ),
        panel(
            3,
            "Lines per hour (region and line from the pickers)",
            "line_hourly",
            "timeseries",
            (0, 18, 16, 8),
            json!({ "unit": "short" }),
        ),
        panel(4, "Lines of the region (pick one)", "region_line_quality", "table", (16, 18, 8, 8), json!({})),
        panel(5, "Topics (share of offered calls)", "topic_shares", "piechart", (0, 26, 12, 9), percent.clone()),
        panel(6, "Age bands (share of offered calls)", "age_band_shares", "piechart", (12, 26, 12, 9), percent),
        panel(7, "Top regions by offered calls", "top_regions", "barchart", (0, 35, 24, 8), json!({})),
    ];
    json!({
        "uid": "cdrflow-hotlines",
        "title": "Citizen hotlines",
        "description": "Calls to the citizen hotlines (122, 117, 112, 8-800, governors' lines) per region, line and hour, from cdrflow's ClickHouse counters.",
        "tags": ["cdrflow", "hotlines"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": true,
        "refresh": "1m",
        "time": { "from": "now-7d", "to": "now" },
        "templating": { "list": [
            {
                "name": "region",
                "label": "Region",
                "type": "query",
                "datasource": datasource(),
                "query": to_grafana(&query("regions")),
                "definition": "named query `regions`",
                "includeAll": true,
                "allValue": "0",
                "multi": false,
                "refresh": 1,
                "current": { "text": "All", "value": "$__all" },
            },
            {
                "name": "line",
                "label": "Line",
                "type": "query",
                "datasource": datasource(),
                "query": to_grafana(&query("lines")),
                "definition": "named query `lines`",
                "includeAll": true,
                "allValue": "",
                "multi": false,
                "refresh": 2,
                "current": { "text": "All", "value": "$__all" },
            },
            {
                "name": "limit",
                "label": "Top regions",
                "type": "custom",
                "query": "10,20,85",
                "current": { "text": "20", "value": "20" },
            },
        ]},
        "panels": panels,
    })
}

//! `cdrflow report`: one region's calls over a range of dates as a self-contained HTML page
//! (inline SVG charts and CSS, no scripts, nothing fetched), for people who would rather
//! look than read. Every figure comes from the named queries of
//! `schemas/sql/dashboards.sql`, as on the Grafana dashboard:
//! `region_quality` (the headline), `region_local_hour_profile` (calls by hour of the
//! region's own clock), `region_line_quality` (service level by line), `region_topics`.

use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use cdrflow_aggregate::clickhouse::ClickHouse;
use cdrflow_schemas::sql::Param;
use serde_json::Value;

/// What to report on.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Region code.
    pub region: u8,
    /// First UTC date, inclusive.
    pub from: jiff::civil::Date,
    /// Last UTC date, inclusive.
    pub to: jiff::civil::Date,
}

/// The figures of one report, as read from ClickHouse.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Region code, names and time zone.
    pub region: u8,
    #[allow(missing_docs)]
    pub name_en: String,
    #[allow(missing_docs)]
    pub name_ru: String,
    #[allow(missing_docs)]
    pub time_zone: String,
    /// First and last UTC date.
    pub from: String,
    #[allow(missing_docs)]
    pub to: String,
    /// Offered, answered, abandon rate, service level, ASA (s) over every line.
    pub offered: u64,
    #[allow(missing_docs)]
    pub answered: u64,
    #[allow(missing_docs)]
    pub abandon_rate: f64,
    #[allow(missing_docs)]
    pub service_level: f64,
    #[allow(missing_docs)]
    pub asa_s: f64,
    /// Per local hour of day 0–23: offered, answered, abandoned.
    pub by_local_hour: [(u64, u64, u64); 24],
    /// Per line: line, offered, service level, abandon rate, ASA.
    pub lines: Vec<(String, u64, f64, f64, f64)>,
    /// Per topic: topic, calls.
    pub topics: Vec<(String, u64)>,
}

fn num(v: &Value) -> u64 {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or(0)
}

fn float(v: &Value) -> f64 {
    v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or(0.0)
}

fn text(v: &Value) -> String {
    v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())
}

/// Reads the report's figures.
pub async fn read(ch: &ClickHouse, o: &ReportOptions) -> Result<Report> {
    if o.to < o.from {
        bail!("--to {} is before --from {}", o.to, o.from);
    }
    let utc =
        |d: jiff::civil::Date| -> Result<i64> { Ok(d.to_zoned(jiff::tz::TimeZone::UTC)?.timestamp().as_second()) };
    let from = utc(o.from)?;
    let to = utc(o.to.tomorrow()?)?;
    let p = [("from", Param::DateTime(from)), ("to", Param::DateTime(to)), ("region", Param::UInt(o.region as u64))];
    let regions = ch.dashboard("regions", &p).await?;
    let Some(region) = regions.iter().find(|r| num(&r["region"]) == o.region as u64) else {
        bail!("region {} is not in cdrflow's regions table (is the database migrated? cdrflow migrate)", o.region);
    };
    let mut r = Report {
        region: o.region,
        name_en: text(&region["name_en"]),
        name_ru: text(&region["name_ru"]),
        time_zone: text(&region["time_zone"]),
        from: o.from.to_string(),
        to: o.to.to_string(),
        ..Report::default()
    };
    if let Some(q) = ch.dashboard("region_quality", &p).await?.iter().find(|q| num(&q["region"]) == o.region as u64) {
        r.offered = num(&q["offered_calls"]);
        r.answered = num(&q["answered_calls"]);
        r.abandon_rate = float(&q["abandon_rate"]);
        r.service_level = float(&q["service_level"]);
        r.asa_s = float(&q["asa_s"]);
    }
    for h in ch.dashboard("region_local_hour_profile", &p).await? {
        let i = num(&h["local_hour_of_day"]) as usize;
        if i < 24 {
            r.by_local_hour[i] = (num(&h["offered_calls"]), num(&h["answered_calls"]), num(&h["abandoned_calls"]));
        }
    }
    for l in ch.dashboard("region_line_quality", &p).await? {
        r.lines.push((
            text(&l["line"]),
            num(&l["offered_calls"]),
            float(&l["service_level"]),
            float(&l["abandon_rate"]),
            float(&l["asa_s"]),
        ));
    }
    for t in ch.dashboard("region_topics", &p).await? {
        r.topics.push((text(&t["topic"]), num(&t["topic_calls"])));
    }
    Ok(r)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn pct(x: f64) -> String {
    format!("{:.1} %", x * 100.0)
}

/// Calls by local hour: stacked bars (answered, abandoned, the rest of offered).
fn hour_chart(r: &Report) -> String {
    let (w, h, left, bottom) = (760.0, 260.0, 56.0, 28.0);
    let max = r.by_local_hour.iter().map(|x| x.0).max().unwrap_or(0).max(1) as f64;
    let bw = (w - left - 8.0) / 24.0;
    let y = |v: f64| (h - bottom) - v / max * (h - bottom - 12.0);
    let mut s =
        format!(r#"<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="Calls by local hour">"#);
    for k in 0..=4 {
        let v = max * k as f64 / 4.0;
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e3e6ea"/><text x="{}" y="{:.1}" class="axis" text-anchor="end">{}</text>"##,
            w - 8.0,
            left - 6.0,
            y(v) + 4.0,
            v.round(),
            y = y(v)
        );
    }
    for (i, &(offered, answered, abandoned)) in r.by_local_hour.iter().enumerate() {
        let x = left + i as f64 * bw + 2.0;
        let other = offered.saturating_sub(answered + abandoned);
        let mut base = 0.0;
        for (v, class) in [(answered, "answered"), (abandoned, "abandoned"), (other, "other")] {
            let top = base + v as f64;
            if v > 0 {
                let _ = write!(
                    s,
                    r#"<rect class="{class}" x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}"><title>{i:02}:00 {class}: {v}</title></rect>"#,
                    y(top),
                    bw - 4.0,
                    y(base) - y(top)
                );
            }
            base = top;
        }
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" class="axis" text-anchor="middle">{i:02}</text>"#,
            x + (bw - 4.0) / 2.0,
            h - 10.0
        );
    }
    s.push_str("</svg>");
    s
}

/// Horizontal bars: `rows` of (label, value in 0..=max, value text).
fn bar_chart(rows: &[(String, f64, String)], max: f64, class: &str, label: &str) -> String {
    let (w, row_h, left) = (760.0, 26.0, 170.0);
    let h = row_h * rows.len().max(1) as f64 + 8.0;
    let mut s =
        format!(r#"<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{}">"#, esc(label));
    for (i, (name, v, shown)) in rows.iter().enumerate() {
        let y = 4.0 + i as f64 * row_h;
        let bw = if max > 0.0 { v / max * (w - left - 90.0) } else { 0.0 };
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" class="label" text-anchor="end">{}</text><rect class="{class}" x="{left}" y="{y:.1}" width="{bw:.1}" height="{:.1}"/><text x="{:.1}" y="{:.1}" class="value">{}</text>"#,
            left - 8.0,
            y + row_h * 0.65,
            esc(name),
            row_h - 8.0,
            left + bw + 6.0,
            y + row_h * 0.65,
            esc(shown)
        );
    }
    s.push_str("</svg>");
    s
}

/// The page.
pub fn html(r: &Report) -> String {
    let lines: Vec<(String, f64, String)> =
        r.lines.iter().map(|(line, offered, sl, _, _)| (format!("{line} ({offered} calls)"), *sl, pct(*sl))).collect();
    let topic_total: u64 = r.topics.iter().map(|t| t.1).sum();
    let topics: Vec<(String, f64, String)> = r
        .topics
        .iter()
        .map(|(t, n)| (t.replace('_', " "), *n as f64, format!("{n} ({})", pct(*n as f64 / topic_total.max(1) as f64))))
        .collect();
    let topic_max = r.topics.iter().map(|t| t.1).max().unwrap_or(0) as f64;
    let mut line_rows = String::new();
    for (line, offered, sl, ar, asa) in &r.lines {
        let _ = write!(
            line_rows,
            "<tr><td>{}</td><td>{offered}</td><td>{}</td><td>{}</td><td>{asa:.1} s</td></tr>",
            esc(line),
            pct(*sl),
            pct(*ar)
        );
    }
    format!(
        r##"<!doctype html>
<html lang="ru"><head><meta charset="utf-8">
<title>{name_en}: citizen hotlines {from} – {to}</title>
<style>
body {{ font: 15px/1.45 "DejaVu Sans", Arial, sans-serif; color: #1d2733; margin: 28px; max-width: 820px; }}
h1 {{ font-size: 24px; margin: 0 0 2px; }} h2 {{ font-size: 17px; margin: 26px 0 6px; }}
.sub {{ color: #5b6775; margin-bottom: 16px; }}
.kpis {{ display: flex; gap: 12px; flex-wrap: wrap; }}
.kpi {{ background: #f3f5f8; border-radius: 8px; padding: 10px 14px; min-width: 120px; }}
.kpi b {{ display: block; font-size: 22px; }}
.axis, .label, .value {{ font-size: 12px; fill: #3b4653; }}
.answered {{ fill: #2e7d32; }} .abandoned {{ fill: #e65100; }} .other {{ fill: #9aa5b1; }}
.sl {{ fill: #1565c0; }} .topic {{ fill: #6a1b9a; }}
.legend span {{ display: inline-block; width: 11px; height: 11px; margin: 0 4px 0 12px; border-radius: 2px; }}
table {{ border-collapse: collapse; margin-top: 8px; }} td, th {{ padding: 3px 12px 3px 0; text-align: left; }}
th {{ border-bottom: 1px solid #cfd6de; }}
footer {{ color: #8a96a3; font-size: 12px; margin-top: 28px; }}
</style></head><body>
<h1>{name_ru} · {name_en}</h1>
<div class="sub">Region {region} · citizen hotlines · UTC dates {from} – {to} · local time {tz}</div>
<div class="kpis">
<div class="kpi">Offered<b>{offered}</b></div>
<div class="kpi">Answered<b>{answered}</b></div>
<div class="kpi">Abandon rate<b>{abandon}</b></div>
<div class="kpi">Service level<b>{sl}</b></div>
<div class="kpi">ASA<b>{asa:.1} s</b></div>
</div>
<h2>Calls by hour of the region's own clock</h2>
<div class="legend"><span class="answered" style="background:#2e7d32"></span>answered<span style="background:#e65100"></span>abandoned<span style="background:#9aa5b1"></span>not answered (busy, no answer, failed)</div>
{hours}
<h2>Service level by line</h2>
{line_chart}
<table><tr><th>Line</th><th>Offered</th><th>Service level</th><th>Abandon rate</th><th>ASA</th></tr>{line_rows}</table>
<h2>Topics</h2>
{topic_chart}
<footer>cdrflow report · counters from ClickHouse (named queries region_quality, region_local_hour_profile, region_line_quality, region_topics) · service level = answered within the line's threshold / (answered + abandoned after it)</footer>
</body></html>
"##,
        name_en = esc(&r.name_en),
        name_ru = esc(&r.name_ru),
        region = r.region,
        from = r.from,
        to = r.to,
        tz = esc(&r.time_zone),
        offered = r.offered,
        answered = r.answered,
        abandon = pct(r.abandon_rate),
        sl = pct(r.service_level),
        asa = r.asa_s,
        hours = hour_chart(r),
        line_chart = bar_chart(&lines, 1.0, "sl", "Service level by line"),
        topic_chart = bar_chart(&topics, topic_max, "topic", "Topics"),
    )
}

/// Reads the figures and writes the page to `out`.
pub fn run(ch: &ClickHouse, rt: &tokio::runtime::Runtime, o: &ReportOptions, out: &std::path::Path) -> Result<Report> {
    let r = rt.block_on(read(ch, o))?;
    if r.offered == 0 {
        tracing::warn!(region = o.region, from = %o.from, to = %o.to, "no calls in the range: the report is empty");
    }
    std::fs::write(out, html(&r)).with_context(|| format!("writing {}", out.display()))?;
    Ok(r)
}

//! The aggregator end to end on real parts: the local Apache Kafka → `cdrflow aggregate` →
//! Debian's ClickHouse, checked counter by counter against the generator's ground truth.

mod common;

use std::time::Duration;

use cdrflow_schemas::sql::Param;
use common::*;

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn counters_and_dashboards_equal_the_ground_truth() {
    let dir = TestDir::new();
    let server = Server::shared();
    let ch = server.fresh_database("aggregate_e2e");
    let kafka = Kafka::shared();
    let topic = kafka.topic("aggregate-e2e", 4);
    let truth_path = dir.path().join("truth.jsonl");
    // The worker starts first, with its metrics endpoint, so the numbers can be seen moving.
    let log = dir.path().join("aggregate.log");
    let mut worker = spawn(
        &args(&[
            "aggregate",
            "--brokers",
            &kafka.bootstrap,
            "--topic",
            &topic,
            "--group",
            "agg-e2e",
            "--session-timeout-ms",
            "6000",
            "--flush-interval-ms",
            "500",
            "--clickhouse",
            &server.url(),
            "--database",
            "t_aggregate_e2e",
            "--metrics-addr",
            "127.0.0.1:19464",
        ]),
        &log,
    );
    wait_until(Duration::from_secs(30), "the metrics endpoint", || {
        http_get(19464, "/healthz").is_some_and(|(s, _)| s == 200)
    });
    let before = http_get(19464, "/metrics").unwrap().1;
    assert_eq!(metric(&before, "cdrflow_records_consumed_total{worker=\"aggregate\"}"), 0);
    generate(&[
        "--cdrs",
        "60000",
        "--seed",
        "21",
        "--resent-share",
        "0.01",
        "--brokers",
        &kafka.bootstrap,
        "--topic",
        &topic,
        "--truth",
        truth_path.to_str().unwrap(),
    ]);
    let marks = kafka.watermarks(&topic, 4);
    let rt = runtime();
    wait_until(Duration::from_secs(90), "the aggregator to catch up", || {
        rt.block_on(ch.positions("agg-e2e", &topic)).unwrap_or_default() == marks
    });
    // The lag gauge is refreshed once a second, so it may trail the counters briefly: once
    // caught up, every partition shows a lag of 0.
    wait_until_logged(Duration::from_secs(20), "a lag of 0 on each partition", &log, || {
        let Some((_, scrape)) = http_get(19464, "/metrics") else { return false };
        (0..4).all(|p| scrape.contains(&format!("cdrflow_consumer_lag{{worker=\"aggregate\",partition=\"{p}\"}} 0\n")))
    });
    let after = http_get(19464, "/metrics").unwrap().1;
    assert_eq!(http_get(19464, "/readyz").unwrap().0, 200);
    assert!(sigterm(&mut worker), "SIGTERM: drain and exit 0");
    let summary: cdrflow_feed::FeedSummary = feed_summary(&dir.path().join("truth.jsonl"));
    assert_eq!(metric(&after, "cdrflow_records_consumed_total{worker=\"aggregate\"}"), summary.messages);
    assert_eq!(metric(&after, "cdrflow_records_accepted_total{worker=\"aggregate\"}"), summary.valid_messages);
    assert_eq!(metric(&after, "cdrflow_records_rejected_total{worker=\"aggregate\""), summary.bad);
    assert!(summary.resent > 300, "the feed re-sends calls");
    assert_eq!(metric(&after, "cdrflow_records_duplicate_total{worker=\"aggregate\"}"), summary.resent, "skipped");
    assert_eq!(
        metric(&after, "cdrflow_records_rejected_total{worker=\"aggregate\",reason=\"unknown_line\"}"),
        summary.bad_by_reason["unknown_line"]
    );
    assert!(metric(&after, "cdrflow_sink_units_total") > 0 && metric(&after, "cdrflow_rows_written_total") > 0);

    let truth = read_truth(&truth_path);
    assert_same_counters(&stored_as_truth(&rt, &ch, Some("agg-e2e")), &truth);

    // Every dashboard query, against the same truth.
    let (from, to) = (Param::DateTime(1_640_995_200), Param::DateTime(1_672_531_200)); // 2022
    let p = [("from", from), ("to", to), ("limit", Param::UInt(5))];
    let q = |name: &str| rt.block_on(ch.dashboard(name, &p)).unwrap();
    let sum = |f: &dyn Fn(&cdrflow_feed::TruthRow) -> bool, v: &dyn Fn(&cdrflow_feed::TruthRow) -> u64| {
        truth.values().filter(|r| f(r)).map(v).sum::<u64>()
    };
    let num =
        |v: &serde_json::Value| -> u64 { v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap() };
    let float =
        |v: &serde_json::Value| -> f64 { v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap() };

    let hours = q("national_calls_per_hour");
    let hours_in_truth: std::collections::BTreeSet<&String> = truth.values().map(|r| &r.hour).collect();
    assert_eq!(hours.len(), hours_in_truth.len());
    for h in &hours {
        let hour = h["hour"].as_str().unwrap().replace(' ', "T") + "Z";
        assert_eq!(num(&h["offered"]), sum(&|r| r.hour == hour, &|r| r.offered), "offered at {hour}");
        assert_eq!(num(&h["answered"]), sum(&|r| r.hour == hour, &|r| r.answered));
        assert_eq!(num(&h["abandoned"]), sum(&|r| r.hour == hour, &|r| r.abandoned));
    }

    let days = q("region_local_day");
    let total_offered: u64 = truth.values().map(|r| r.offered).sum();
    assert_eq!(days.iter().map(|d| num(&d["offered"])).sum::<u64>(), total_offered);
    let irkutsk: u64 = days.iter().filter(|d| num(&d["region"]) == 38).map(|d| num(&d["offered"])).sum();
    assert_eq!(irkutsk, sum(&|r| r.region == 38, &|r| r.offered));
    assert!(days.iter().any(|d| d["name_en"] == "Irkutsk Oblast"));

    for row in q("line_region_quality") {
        let (line, region) = (row["line"].as_str().unwrap().to_owned(), num(&row["region"]) as u8);
        let of = |v: &dyn Fn(&cdrflow_feed::TruthRow) -> u64| sum(&|r| r.line == line && r.region == region, v);
        let (offered, answered, abandoned) = (of(&|r| r.offered), of(&|r| r.answered), of(&|r| r.abandoned));
        assert_eq!(num(&row["offered_calls"]), offered);
        assert_eq!(num(&row["answered_calls"]), answered);
        let sl_den = answered + of(&|r| r.abandoned_after_sl);
        let sl = if sl_den == 0 { 0.0 } else { of(&|r| r.answered_within_sl) as f64 / sl_den as f64 };
        assert!((float(&row["service_level"]) - sl).abs() < 1e-9, "{line}/{region} service level");
        let ar = if offered == 0 { 0.0 } else { abandoned as f64 / offered as f64 };
        assert!((float(&row["abandon_rate"]) - ar).abs() < 1e-9);
        let asa = if answered == 0 { 0.0 } else { of(&|r| r.wait_sum_ms) as f64 / answered as f64 / 1000.0 };
        assert!((float(&row["asa_s"]) - asa).abs() < 1e-6, "{line}/{region} ASA");
    }

    for row in q("region_quality") {
        let region = num(&row["region"]) as u8;
        let of = |v: &dyn Fn(&cdrflow_feed::TruthRow) -> u64| sum(&|r| r.region == region, v);
        let (offered, answered) = (of(&|r| r.offered), of(&|r| r.answered));
        assert_eq!((num(&row["offered_calls"]), num(&row["answered_calls"])), (offered, answered), "region {region}");
        let sl = of(&|r| r.answered_within_sl) as f64 / (answered + of(&|r| r.abandoned_after_sl)) as f64;
        assert!((float(&row["service_level"]) - sl).abs() < 1e-9, "region {region} service level");
        let asa = of(&|r| r.wait_sum_ms) as f64 / answered as f64 / 1000.0;
        assert!((float(&row["asa_s"]) - asa).abs() < 1e-6, "region {region} ASA");
    }

    let top = q("top_regions");
    let mut by_region: Vec<(u64, u8)> =
        (1..=95u8).map(|g| (sum(&|r| r.region == g, &|r| r.offered), g)).filter(|x| x.0 > 0).collect();
    by_region.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let got: Vec<(u64, u8)> = top.iter().map(|r| (num(&r["offered"]), num(&r["region"]) as u8)).collect();
    assert_eq!(got, by_region[..5].to_vec());
    assert_eq!(top[0]["name_en"], "Moscow");

    for (query, field, name) in [("topic_shares", "topics", "topic"), ("age_band_shares", "age_bands", "age_band")] {
        let rows = q(query);
        let mut want: std::collections::BTreeMap<String, u64> = Default::default();
        for r in truth.values() {
            let map = if field == "topics" { &r.topics } else { &r.age_bands };
            for (k, v) in map {
                *want.entry(k.clone()).or_default() += v;
            }
        }
        assert_eq!(rows.len(), want.len(), "{query}");
        for row in rows {
            let k = row[name].as_str().unwrap();
            let calls = num(row.as_object().unwrap().iter().find(|(k, _)| k.ends_with("_calls")).unwrap().1);
            assert_eq!(calls, want[k], "{query} {k}");
            assert!((float(&row["share"]) - calls as f64 / total_offered as f64).abs() < 1e-9);
        }
    }
}

/// A flush reads each partition's position back from the rows at or after its unit's start
/// only (`positions_of_units`): on a log of many flushes, inserted in four parts, with partitions
/// far apart in offsets, a checkpoint row (region 0) and a partition that has no rows, it
/// answers what reading the whole log answers, for every start a unit can have (the
/// position itself, or one the partition has since left behind).
#[test]
fn positions_read_from_the_units_starts_equal_the_whole_logs() {
    let server = Server::shared();
    let ch = server.fresh_database("positions_of_units");
    let db = "t_positions_of_units";
    // Partition p's flush f covers offsets [f * step(p), (f + 1) * step(p) - 1], two cells each;
    // partition 2 flushes only rejected records (region 0) from flush 3 on.
    let step = |p: u64| [1_000u64, 7, 1, 250_000][p as usize];
    for part in 0..4u64 {
        let mut values = Vec::new();
        for f in part * 10..(part + 1) * 10 {
            for p in [0u64, 1, 2, 3] {
                if p == 2 && f < 3 {
                    continue;
                }
                let (first, last) = (f * step(p), (f + 1) * step(p) - 1);
                let regions: &[u8] = if p == 2 { &[0] } else { &[77, 50] };
                for r in regions {
                    values.push(format!(
                        "('g', 'cdrs', {p}, {first}, {last}, toDateTime(1764547200 + {f} * 5), {r}, '122', toDateTime(1764547200), toDateTime(1764547200), 1)"
                    ));
                }
            }
        }
        // Another group and topic, further on: never mistaken for ours.
        values.push("('other', 'cdrs', 0, 0, 99999999, now(), 77, '122', now(), now(), 1)".into());
        values.push("('g', 'other', 1, 0, 99999999, now(), 77, '122', now(), now(), 1)".into());
        server.query(&format!(
            "INSERT INTO {db}.counters_log (consumer_group, topic, kafka_partition, first_offset, last_offset, flushed_at, region, line, hour, local_hour, offered) VALUES {}",
            values.join(", ")
        ));
    }
    let rt = runtime();
    let whole = rt.block_on(ch.positions("g", "cdrs")).unwrap();
    assert_eq!(whole.get(&0), Some(&40_000));
    assert_eq!(whole.get(&3), Some(&10_000_000));
    assert_eq!(whole.get(&4), None);
    // Units starting at the position, at an earlier one, at the very start of the log, and
    // a partition with no rows at all (4).
    for back in [0i64, 1, 5, 39, 40] {
        let units: Vec<(i32, i64)> = [0i32, 1, 2, 3]
            .into_iter()
            .map(|p| (p, (whole[&p] - back * step(p as u64) as i64).max(0)))
            .chain([(4, 0)])
            .collect();
        let read = rt.block_on(ch.positions_of_units("g", "cdrs", &units)).unwrap();
        assert_eq!(read, whole, "units starting {back} flushes back: {units:?}");
    }
    // Only the partitions asked for are answered.
    let one = rt.block_on(ch.positions_of_units("g", "cdrs", &[(1, whole[&1])])).unwrap();
    assert_eq!(one, [(1, whole[&1])].into_iter().collect());
    assert!(rt.block_on(ch.positions_of_units("g", "cdrs", &[])).unwrap().is_empty());
}

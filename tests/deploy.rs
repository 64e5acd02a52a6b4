//! What an operator runs and what a dashboard shows:
//! - the deploy files parse (Compose schema, Kubernetes schemas, Dockerfile) and every
//!   cdrflow command in them runs, with the flags, config file and secrets they give it, under
//!   `--dry-run` (or `config check` and `--help` for `migrate`);
//! - `cdrflow config check` accepts the example and names what is wrong in bad ones;
//! - the Grafana dashboard is made from the named queries, and every panel's query runs
//!   on the real ClickHouse and agrees with the ground truth;
//! - `cdrflow report` writes a page with the same figures, rendered by headless Chromium.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cdrflow_aggregate::clickhouse::encoder::{Unit, encode};
use cdrflow_aggregate::rollup::PartitionRollup;
use cdrflow_feed::{FeedOptions, Generator, Message};
use cdrflow_schemas::sql::{Param, dashboard_queries};
use cdrflow_schemas::versions::call_key;
use cdrflow_schemas::{Decoder, LineRegistry, Pseudonymiser};
use common::*;
use serde_json::Value;

fn cdrflow(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args).env_remove("CDRFLOW_CONFIG");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Container paths under /etc/cdrflow are made under `root`.
fn local(root: &Path, p: &str) -> String {
    match p.strip_prefix("/etc/cdrflow") {
        Some(rest) => format!("{}{rest}", root.display()),
        None => p.to_owned(),
    }
}

#[test]
fn deploy_files_parse_and_every_command_in_them_runs() {
    let out =
        Command::new("python3").arg(repo().join("deploy/local/check_deploy.py")).arg("--commands").output().unwrap();
    assert!(out.status.success(), "deploy files invalid:\n{}", text(&out));
    let commands: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let sources: Vec<&str> = commands.iter().map(|c| c["source"].as_str().unwrap()).collect();
    for want in [
        "compose.yaml service ingest-1",
        "compose.yaml service aggregate-2",
        "ingest.yaml",
        "aggregate.yaml",
        "migrate-job.yaml",
        "Dockerfile CMD",
    ] {
        assert!(sources.iter().any(|s| s.starts_with(want)), "{want} among {sources:?}");
    }
    for c in &commands {
        let dir = TestDir::new();
        let root = dir.path();
        for (path, content) in c["files"].as_object().unwrap() {
            let p = PathBuf::from(local(root, path));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let content = match content.as_str() {
                Some(t) => t.to_owned(),
                None => "a-secret-of-the-test-0123456789abcdef".to_owned(),
            };
            std::fs::write(&p, content).unwrap();
        }
        let mut args: Vec<String> =
            c["args"].as_array().unwrap().iter().map(|a| local(root, a.as_str().unwrap())).collect();
        let env: Vec<(String, String)> =
            c["env"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), local(root, v.as_str().unwrap()))).collect();
        let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let what = c["source"].as_str().unwrap();
        match args.first().map(String::as_str) {
            Some("ingest" | "aggregate" | "migrate") => {
                args.push("--dry-run".into());
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                let o = cdrflow(&refs, &env_refs);
                assert!(o.status.success(), "{what}: cdrflow {args:?} --dry-run failed:\n{}", text(&o));
                let settings: Value = serde_json::from_slice(&o.stdout).unwrap();
                assert_eq!(settings["worker"], args[0], "{what}");
                assert!(!text(&o).contains("a-secret-of-the-test"), "{what}: a secret in the dry run's output");
                if args[0] != "ingest" {
                    assert_eq!(settings["clickhouse"]["password"], "<set>", "{what}: the ClickHouse password is found");
                }
            }
            _ => {
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                let o = cdrflow(&refs, &env_refs);
                assert!(o.status.success() && text(&o).contains("Usage"), "{what}: cdrflow {args:?}:\n{}", text(&o));
            }
        }
    }
    // Every subcommand answers --help.
    for sub in [
        "demo",
        "generate",
        "validate",
        "migrate",
        "ingest",
        "aggregate",
        "reconcile",
        "backfill",
        "report",
        "config",
        "broker",
    ] {
        let o = cdrflow(&[sub, "--help"], &[]);
        assert!(o.status.success(), "cdrflow {sub} --help:\n{}", text(&o));
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn config_check_accepts_the_example_and_names_each_mistake() {
    let dir = TestDir::new();
    let example = std::fs::read_to_string(repo().join("deploy/cdrflow.example.toml")).unwrap();
    let good = write(dir.path(), "cdrflow.toml", &example);
    // The example names its secret files: without them, check says which is missing.
    let o = cdrflow(&["config", "check", good.to_str().unwrap()], &[]);
    for key in ["[secrets] caller_key_file", "[secrets] clickhouse_password_file", "[secrets] kafka_sasl_password_file"]
    {
        assert!(!o.status.success() && text(&o).contains(key), "every missing secret is named at once: {}", text(&o));
    }
    write(dir.path(), "secrets/caller-key", "a caller key of more than 16 bytes");
    write(dir.path(), "secrets/clickhouse-password", "pw");
    write(dir.path(), "secrets/kafka-sasl-password", "pw");
    let o = cdrflow(&["config", "check", good.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let checked: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(checked["ingest_environment"]["CDRFLOW_OUT"], "s3://cdr-archive/hotlines");
    assert_eq!(checked["aggregate_environment"]["CDRFLOW_AGGREGATE_GROUP"], "cdrflow-aggregate");
    assert_eq!(checked["kafka_properties"]["security.protocol"], "SASL_SSL", "TLS + SASL pass through to librdkafka");
    assert!(!text(&o).contains("pw\""), "no secret printed");

    // Flags over environment over file: the file says 500000 rows, the environment 7, the flag 9.
    let cfg = good.to_str().unwrap();
    let rows = |envs: &[(&str, &str)], flags: &[&str]| -> Value {
        let mut args = vec!["ingest", "--config", cfg, "--dry-run"];
        args.extend_from_slice(flags);
        let o = cdrflow(&args, envs);
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice::<Value>(&o.stdout).unwrap()["max_rows"].clone()
    };
    assert_eq!(rows(&[], &[]), 500_000);
    assert_eq!(rows(&[("CDRFLOW_MAX_ROWS", "7")], &[]), 7);
    assert_eq!(rows(&[("CDRFLOW_MAX_ROWS", "7")], &["--max-rows", "9"]), 9);
    let o = cdrflow(&["ingest", "--config", cfg, "--dry-run"], &[]);
    let dry: Value = serde_json::from_slice(&o.stdout).unwrap();
    let props = &dry["kafka"]["consumer_properties"];
    assert_eq!(props["sasl.password"]["value"], "<redacted>", "the SASL password file is read, not shown");
    assert_eq!(props["sasl.mechanism"]["value"], "SCRAM-SHA-512");
    // [kafka] decode_threads reaches the worker (commented out in the example: the default, 1).
    assert_eq!(dry["kafka"]["decode_threads"], 1, "{dry}");
    assert!(example.contains("# decode_threads = 1"));
    let p = write(dir.path(), "decode.toml", &example.replacen("# decode_threads = 1", "decode_threads = 0", 1));
    let o = cdrflow(&["ingest", "--config", p.to_str().unwrap(), "--dry-run"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(serde_json::from_slice::<Value>(&o.stdout).unwrap()["kafka"]["decode_threads"], 0);

    // Each mistake is named with its key and the fix.
    let bad = |name: &str, from: &str, to: &str, want: &str| {
        assert!(example.contains(from), "{from}");
        let p = write(dir.path(), name, &example.replacen(from, to, 1));
        let o = cdrflow(&["config", "check", p.to_str().unwrap()], &[]);
        assert!(!o.status.success(), "{name} passed");
        assert!(text(&o).contains(want), "{name}: {}", text(&o));
        assert!(!text(&o).contains("hunter2"), "{name}: a secret is never shown: {}", text(&o));
    };
    bad("unknown.toml", "flush_interval_ms = 5000", "flush_every_ms = 5000", "unknown field `flush_every_ms`");
    bad("type.toml", "max_rows = 500000", "max_rows = \"many\"", "max_rows");
    bad("zero.toml", "max_rows = 500000", "max_rows = 0", "[ingest] max_rows: must be above 0");
    bad("url.toml", "url = \"http://clickhouse:8123\"", "url = \"clickhouse:8123\"", "[clickhouse] url");
    bad(
        "inline-secret.toml",
        "\"sasl.username\" = \"cdrflow\"",
        "\"sasl.password\" = \"hunter2\"",
        "secrets do not go in the file",
    );
    bad("password-key.toml", "user = \"cdrflow\"", "password = \"hunter2\"", "secrets do not go in the file");
    bad(
        "url-secret.toml",
        "url = \"http://clickhouse:8123\"",
        "url = \"http://cdrflow:hunter2@clickhouse:8123\"",
        "the URL holds a user or password",
    );
    bad(
        "librdkafka.toml",
        "\"sasl.mechanism\" = \"SCRAM-SHA-512\"",
        "\"sasl.mechanism\" = \"SCRAM-SHA-1024\"",
        "rejected by librdkafka",
    );
    bad("format.toml", "format = \"json\"", "format = \"xml\"", "use json or asterisk-csv");
    // And on the command line: no secrets in flags.
    let o = cdrflow(&["ingest", "--config", cfg, "--dry-run", "--kafka-option", "sasl.password=x"], &[]);
    assert!(!o.status.success() && text(&o).contains("secrets do not go on the command line"), "{}", text(&o));
}

#[test]
fn grafana_dashboard_is_made_from_the_named_queries() {
    let path = repo().join("deploy/grafana/dashboards/cdrflow.json");
    let made = serde_json::to_string_pretty(&cdrflow_dashboards::grafana::dashboard()).unwrap() + "\n";
    if std::env::var_os("CDRFLOW_BLESS").is_some() {
        std::fs::write(&path, &made).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap();
    assert!(committed == made, "{} is stale: CDRFLOW_BLESS=1 cargo test --test deploy grafana", path.display());
    let named: BTreeMap<String, String> = dashboard_queries().into_iter().map(|q| (q.name, q.sql)).collect();
    let d: Value = serde_json::from_str(&committed).unwrap();
    let panels = d["panels"].as_array().unwrap();
    assert!(panels.len() >= 6);
    for p in panels {
        let t = &p["targets"][0];
        let name = t["meta"]["cdrflowQuery"].as_str().unwrap();
        assert_eq!(
            cdrflow_dashboards::grafana::from_grafana(t["rawSql"].as_str().unwrap()),
            named[name],
            "panel {}",
            p["title"]
        );
        assert!(!t["rawSql"].as_str().unwrap().contains('{') || t["rawSql"].as_str().unwrap().contains("${"));
    }
    for v in d["templating"]["list"].as_array().unwrap().iter().filter(|v| v["type"] == "query") {
        let sql = cdrflow_dashboards::grafana::from_grafana(v["query"].as_str().unwrap());
        assert!(named.values().any(|q| *q == sql), "variable {} uses a named query", v["name"]);
    }
}

/// Counters of a generated feed, put in ClickHouse the way the aggregator does (rollup,
/// encode, one insert per partition), and the feed's ground truth.
fn load_feed(
    ch: &cdrflow_aggregate::clickhouse::ClickHouse,
    rt: &tokio::runtime::Runtime,
) -> Vec<cdrflow_feed::TruthRow> {
    let lines = LineRegistry::builtin();
    let d = Decoder::new(lines.clone(), Pseudonymiser::ephemeral());
    let mut g = Generator::new(FeedOptions {
        cdrs: 60_000,
        seed: 21,
        resent_share: 0.0,
        calls_per_day: 20_000.0, // three days: every hour of the clock
        ..FeedOptions::default()
    });
    let mut parts: Vec<PartitionRollup> = (0..4).map(|_| PartitionRollup::default()).collect();
    let mut offset = 0i64;
    while g
        .emit_next(&mut |m: Message<'_>| {
            let p = (m.key.iter().map(|b| *b as usize).sum::<usize>()) % 4;
            parts[p].saw(offset);
            if let Ok(cdr) = d.decode_json(m.payload) {
                parts[p].add(&cdr, call_key(&cdr.call_id), &lines);
            }
            offset += 1;
            Ok(())
        })
        .unwrap()
    {}
    for (i, r) in parts.iter().enumerate() {
        let unit = Unit { group: "deploy-test", topic: "cdrs", partition: i as i32, flushed_at: 1_700_000_000 };
        rt.block_on(ch.insert_unit(&format!("deploy-test-{i}"), encode(&unit, r, &lines))).unwrap();
    }
    let mut buf = Vec::new();
    g.write_truth(&mut buf).unwrap();
    String::from_utf8(buf).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn num(v: &Value) -> u64 {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or_else(|| panic!("{v} is not a count"))
}

fn float(v: &Value) -> f64 {
    v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap()
}

#[test]
fn every_dashboard_panel_runs_on_clickhouse_and_the_report_renders() {
    let server = Server::shared();
    let ch = server.fresh_database("deploy");
    let rt = runtime();
    let truth = load_feed(&ch, &rt);
    let total: u64 = truth.iter().map(|r| r.offered).sum();
    let of =
        |f: &dyn Fn(&cdrflow_feed::TruthRow) -> bool| truth.iter().filter(|r| f(r)).map(|r| r.offered).sum::<u64>();
    assert!(of(&|r| r.region == 38) > 0, "Irkutsk has calls in the feed");

    // Each panel's SQL, mapped back to its named query, with the variables at "All" and at one
    // region and line.
    let d = cdrflow_dashboards::grafana::dashboard();
    let year = |region: u64, line: &str| {
        vec![
            ("from", Param::DateTime(1_640_995_200)),
            ("to", Param::DateTime(1_672_531_200)),
            ("region", Param::UInt(region)),
            ("line", Param::Code(line.to_owned())),
            ("limit", Param::UInt(200)),
        ]
    };
    let run = |name: &str, p: &[(&str, Param)]| {
        rt.block_on(ch.dashboard(name, p)).unwrap_or_else(|e| panic!("{name}: {e:#}"))
    };
    for p in d["panels"].as_array().unwrap() {
        let name = p["targets"][0]["meta"]["cdrflowQuery"].as_str().unwrap();
        let rows = run(name, &year(0, ""));
        assert!(!rows.is_empty(), "panel {name} is empty");
        let offered_col = ["offered", "offered_calls"].into_iter().find(|c| rows[0].get(*c).is_some());
        if let Some(c) = offered_col {
            assert_eq!(
                rows.iter().map(|r| num(&r[c])).sum::<u64>(),
                total,
                "panel {name}: offered calls add up to the truth"
            );
        }
    }
    let one_line = run("line_hourly", &year(38, "122"));
    assert_eq!(
        one_line.iter().map(|r| num(&r["offered_calls"])).sum::<u64>(),
        of(&|r| r.region == 38 && r.line == "122")
    );
    assert!(one_line.iter().all(|r| r["line"] == "122"));
    let lines = run("lines", &year(0, ""));
    assert!(lines.iter().any(|l| l["line"] == "112") && lines.iter().any(|l| l["line"] == "122"));
    assert!(
        rt.block_on(ch.dashboard("line_hourly", &year(0, "122' OR 1=1 --"))).is_err(),
        "a line that is not a code is refused"
    );

    // The report: the same figures on one page, then a picture of it.
    let dir = repo().join("target/report-test");
    std::fs::create_dir_all(&dir).unwrap();
    let html = dir.join("irkutsk.html");
    let o = cdrflow(
        &[
            "report",
            "--region",
            "38",
            "--from",
            "2022-02-01",
            "--to",
            "2022-02-28",
            "--out",
            html.to_str().unwrap(),
            "--clickhouse",
            &server.url(),
            "--database",
            "t_deploy",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", text(&o));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("Иркутская область") && page.contains("Asia/Irkutsk"));
    assert!(page.contains(&format!("Offered<b>{}</b>", of(&|r| r.region == 38))), "headline offered = truth");
    let per_line = run("region_line_quality", &year(38, ""));
    for l in &per_line {
        let line = l["line"].as_str().unwrap();
        assert_eq!(num(&l["offered_calls"]), of(&|r| r.region == 38 && r.line == line));
        assert!(page.contains(&format!("{line} ({} calls)", num(&l["offered_calls"]))), "line {line} on the page");
        assert!((0.0..=1.0).contains(&float(&l["service_level"])));
    }
    assert!(!page.contains("<script") && !page.contains("http://") && !page.contains("https://"), "self-contained");
    let hours: u64 = run("region_local_hour_profile", &year(38, "")).iter().map(|h| num(&h["offered_calls"])).sum();
    assert_eq!(hours, of(&|r| r.region == 38));

    let chromium =
        ["chromium", "chromium-browser"].into_iter().find(|c| Command::new(c).arg("--version").output().is_ok());
    let Some(chromium) = chromium else {
        assert!(std::env::var_os("CI").is_none(), "CI installs chromium (deploy/local/test.sh)");
        eprintln!("chromium is not installed: the report was checked but not rendered");
        return;
    };
    let png = dir.join("irkutsk.png");
    let _ = std::fs::remove_file(&png);
    let profile = tempfile::tempdir().unwrap();
    let o = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            &format!("--user-data-dir={}", profile.path().display()),
            "--window-size=880,1500",
            &format!("--screenshot={}", png.display()),
            &format!("file://{}", html.display()),
        ])
        .output()
        .unwrap();
    let shot = std::fs::read(&png).unwrap_or_else(|_| panic!("no screenshot: {}", text(&o)));
    assert_eq!(&shot[1..4], b"PNG");
    assert!(shot.len() > 30_000, "the screenshot has content ({} bytes)", shot.len());
}

#[test]
fn cluster_ddl_is_the_single_node_schema_in_the_cluster_layout() {
    let o = cdrflow(&["migrate", "--cluster", "hotlines", "--print"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let made = String::from_utf8(o.stdout).unwrap();
    let path = repo().join("deploy/clickhouse-cluster/cluster.sql");
    if std::env::var_os("CDRFLOW_BLESS").is_some() {
        std::fs::write(&path, &made).unwrap();
    }
    assert!(
        std::fs::read_to_string(&path).unwrap() == made,
        "{} is stale: CDRFLOW_BLESS=1 cargo test --test deploy cluster",
        path.display()
    );
    let stmts: Vec<&str> = made.split(";\n").map(str::trim).filter(|s| !s.is_empty()).collect();
    assert!(stmts.iter().all(|s| s.contains("ON CLUSTER 'hotlines'")), "every statement runs on the whole cluster");
    // Every MergeTree table of the single-node schema is a replicated local table and a
    // distributed table of the same name.
    let single = cdrflow(&["migrate", "--print"], &[]);
    let single = String::from_utf8(single.stdout).unwrap();
    for s in single.split(";\n").filter(|s| s.contains("ENGINE = MergeTree") || s.contains(" AS cdrflow.")) {
        let Some(name) = s.trim().strip_prefix("CREATE TABLE IF NOT EXISTS ").and_then(|r| r.split_whitespace().next())
        else {
            continue;
        };
        assert!(
            made.contains(&format!("CREATE TABLE IF NOT EXISTS {name}_local ON CLUSTER 'hotlines'")),
            "{name}_local"
        );
        let table = name.split_once('.').unwrap().1;
        assert!(
            made.contains(&format!(
                "ReplicatedMergeTree('/clickhouse/tables/{{shard}}/cdrflow/{table}', '{{replica}}')"
            ))
        );
        assert!(made.contains(&format!("CREATE TABLE IF NOT EXISTS {name} ON CLUSTER 'hotlines' AS {name}_local\nENGINE = Distributed('hotlines', cdrflow, {table}_local,")), "{name}");
    }
    assert!(
        made.contains("Distributed('hotlines', cdrflow, counters_log_local, kafka_partition)"),
        "a flush stays on one shard"
    );
    assert!(!made.contains(" NOT IN (SELECT") || made.contains("GLOBAL NOT IN (SELECT"));
    let o = cdrflow(&["migrate", "--cluster", "bad name;", "--print"], &[]);
    assert!(!o.status.success());
}

#[test]
fn kafka_tls_and_sasl_examples_pass_librdkafka_checks() {
    // A throwaway CA-signed pair, so librdkafka really loads certificates and keys.
    let dir = TestDir::new();
    let d = dir.path();
    let openssl = |args: &[&str]| {
        let o = Command::new("openssl").args(args).current_dir(d).output().expect("openssl (Debian's openssl package)");
        assert!(o.status.success(), "openssl {args:?}: {}", text(&o));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=test-ca",
        "-days",
        "2",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "user.key",
        "-out",
        "user.csr",
        "-subj",
        "/CN=cdrflow",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "user.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "user.crt",
        "-days",
        "2",
    ]);
    write(d, "secrets/kafka-sasl-password", "a-sasl-password-of-the-test");
    write(d, "secrets/kafka-ssl-key-password", "unused-for-an-unencrypted-key");
    for example in ["sasl-scram.toml", "mtls.toml"] {
        let text_of = std::fs::read_to_string(repo().join("deploy/kafka-security").join(example)).unwrap();
        let local_paths = text_of
            .replace("/etc/cdrflow/kafka-ca/", &format!("{}/", d.display()))
            .replace("/etc/cdrflow/kafka-tls/", &format!("{}/", d.display()))
            .replace("/etc/cdrflow/secrets/", &format!("{}/secrets/", d.display()));
        let cfg = write(d, example, &local_paths);
        let o = cdrflow(&["config", "check", cfg.to_str().unwrap()], &[]);
        assert!(o.status.success(), "{example}: {}", text(&o));
        let o = cdrflow(&["aggregate", "--config", cfg.to_str().unwrap(), "--dry-run"], &[]);
        assert!(o.status.success(), "{example}: {}", text(&o));
        assert!(!text(&o).contains("a-sasl-password-of-the-test"), "{example}: the password is not shown");
        // A certificate file that is not there is caught by librdkafka, named.
        let broken = write(d, &format!("broken-{example}"), &local_paths.replace("ca.crt", "missing-ca.crt"));
        let o = cdrflow(&["config", "check", broken.to_str().unwrap()], &[]);
        assert!(!o.status.success() && text(&o).contains("ssl.ca.location"), "{example}: {}", text(&o));
    }
}

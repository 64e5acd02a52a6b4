//! The command line's small promises: clear errors, logs fit for files and shippers, flags
//! that say their defaults, and no file written where it should not be.

mod common;

use std::process::{Command, Output};

use common::*;

fn cdrflow(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args).env_remove("CDRFLOW_LOG_JSON");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn logs_to_a_file_carry_no_colour_codes_and_json_logs_take_any_true_value() {
    let o = cdrflow(&["generate", "--cdrs", "10", "--out", "/dev/null"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("feed generated"), "{}", stderr(&o));
    assert!(!stderr(&o).contains('\u{1b}'), "ANSI escapes in a log that is not a terminal: {:?}", stderr(&o));
    for v in ["1", "true", "yes"] {
        let o = cdrflow(&["generate", "--cdrs", "10", "--out", "/dev/null"], &[("CDRFLOW_LOG_JSON", v)]);
        assert!(o.status.success(), "CDRFLOW_LOG_JSON={v}: {}", stderr(&o));
        for line in stderr(&o).lines() {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("CDRFLOW_LOG_JSON={v}: {e}: {line}"));
        }
    }
    // A fatal error is a JSON line too under --log-json.
    let o = cdrflow(&["--log-json", "validate", "--format", "json", "/nonexistent/feed.jsonl"], &[]);
    assert!(!o.status.success());
    let last = stderr(&o).lines().last().unwrap_or_default().to_owned();
    let v: serde_json::Value = serde_json::from_str(&last).unwrap_or_else(|e| panic!("{e}: {last}"));
    assert_eq!(v["level"], "ERROR");
    assert!(v["fields"]["error"].as_str().unwrap().contains("/nonexistent/feed.jsonl"), "{v}");
}

#[test]
fn generate_writes_no_summary_beside_a_device_and_defaults_its_topic() {
    let _ = std::fs::remove_file("/dev/null.summary.json");
    let o = cdrflow(&["generate", "--cdrs", "20", "--out", "/dev/null", "--truth", "/dev/null"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!std::path::Path::new("/dev/null.summary.json").exists(), "a summary was written beside /dev/null");
    let dir = TestDir::new();
    let summary = dir.path().join("s.json");
    let o = cdrflow(
        &[
            "generate",
            "--cdrs",
            "20",
            "--out",
            "/dev/null",
            "--truth",
            "/dev/null",
            "--summary",
            summary.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success() && summary.exists(), "{}", stderr(&o));
    // --brokers without --topic uses cdrs, like every other command (nothing to send: no connection needed).
    let o = cdrflow(&["generate", "--cdrs", "0", "--brokers", "127.0.0.1:1"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn help_shows_defaults_and_contradictory_flags_are_refused() {
    for (cmd, group) in [("ingest", "cdrflow-ingest"), ("aggregate", "cdrflow-aggregate")] {
        let o = cdrflow(&[cmd, "--help"], &[]);
        let help = String::from_utf8_lossy(&o.stdout);
        assert!(help.contains(&format!("[default: {group}]")), "{cmd} --help does not show --group's default:\n{help}");
    }
    let o = cdrflow(&["migrate", "--print", "--dry-run"], &[]);
    assert_eq!(o.status.code(), Some(2), "--print and --dry-run together: {}", stderr(&o));
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
}

#[test]
fn a_missing_key_file_is_named_once_with_its_reason() {
    let o = cdrflow(
        &["ingest", "--brokers", "127.0.0.1:1", "--out", "/tmp/unused", "--dry-run"],
        &[("CDRFLOW_CALLER_KEY_FILE", "/nonexistent/caller.key")],
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("/nonexistent/caller.key"), "{e}");
    assert_eq!(e.matches("No such file or directory").count(), 1, "the OS error once: {e}");
}

#[test]
fn an_absurd_decode_thread_count_is_refused_and_a_sane_one_shown() {
    let key = [("CDRFLOW_CALLER_KEY", "test-key-0123456789abcdef")];
    for worker in [&["ingest", "--out", "/tmp/unused"][..], &["aggregate"][..]] {
        let run = |threads: &str| {
            let mut args = worker.to_vec();
            args.extend(["--brokers", "127.0.0.1:1", "--decode-threads", threads, "--dry-run"]);
            cdrflow(&args, &key)
        };
        // A typo for 10: refused, naming the flag and the bound.
        let o = run("100000");
        assert!(!o.status.success(), "{worker:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("--decode-threads 100000 is more than 4 per core"), "{worker:?}: {}", stderr(&o));
        // 0 (decode as each message is handled) is a choice, and --dry-run shows it.
        let o = run("0");
        assert!(o.status.success(), "{worker:?}: {}", stderr(&o));
        let shown: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(shown["kafka"]["decode_threads"], 0, "{worker:?}: {shown}");
    }
}

#[test]
fn commands_on_an_unmigrated_database_say_to_migrate() {
    let server = Server::shared();
    server.query("DROP DATABASE IF EXISTS t_never_migrated");
    let url = server.url();
    let dir = TestDir::new();
    let out = dir.path().join("r.html");
    for args in [
        vec!["report", "--region", "38", "--from", "2022-02-01", "--to", "2022-02-02", "--out", out.to_str().unwrap()],
        vec!["aggregate", "--brokers", "127.0.0.1:1"],
    ] {
        let mut a = args.clone();
        a.extend(["--clickhouse", &url, "--database", "t_never_migrated"]);
        let o = cdrflow(&a, &[]);
        assert!(!o.status.success(), "{a:?}");
        assert!(stderr(&o).contains("run `cdrflow migrate"), "{a:?}: {}", stderr(&o));
    }
}

#[test]
fn the_demo_never_drops_a_database_it_did_not_create_and_honours_the_clickhouse_url() {
    let server = Server::shared();
    server.query("CREATE DATABASE IF NOT EXISTS t_not_the_demos");
    server.query("CREATE TABLE IF NOT EXISTS t_not_the_demos.precious (x UInt8) ENGINE = Memory");
    server.query("INSERT INTO t_not_the_demos.precious VALUES (7)");
    let dir = TestDir::new();
    let work = dir.path().join("demo");
    let o = cdrflow(&["demo", "--database", "t_not_the_demos", "--workdir", work.to_str().unwrap()], &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("already has a database t_not_the_demos"), "{}", stderr(&o));
    assert_eq!(server.query("SELECT sum(x) FROM t_not_the_demos.precious").trim(), "7", "the database is untouched");
    server.query("DROP DATABASE t_not_the_demos");
    // CDRFLOW_CLICKHOUSE_URL names the server: one that is not there is reported as such.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{closed}");
    let o = cdrflow(&["demo", "--workdir", work.to_str().unwrap()], &[("CDRFLOW_CLICKHOUSE_URL", &url)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains(&format!("ClickHouse at {url} did not answer")), "{}", stderr(&o));
}

/// The demo clears its workdir, so it takes only a new or empty directory, or one an earlier
/// demo made: `--workdir .` or a mistyped path never deletes what is there.
#[test]
fn the_demo_clears_only_a_workdir_it_made_itself() {
    let dir = TestDir::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{closed}");
    let demo = |work: &std::path::Path| {
        cdrflow(&["demo", "--workdir", work.to_str().unwrap()], &[("CDRFLOW_CLICKHOUSE_URL", &url)])
    };

    // Someone's directory, and a file: refused before anything runs, untouched.
    let precious = dir.path().join("precious");
    std::fs::create_dir_all(precious.join("sub")).unwrap();
    std::fs::write(precious.join("sub/data.parquet"), b"PAR1").unwrap();
    let o = demo(&precious);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is not a directory the demo made"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("ClickHouse at"), "refused before ClickHouse was asked: {}", stderr(&o));
    assert_eq!(std::fs::read(precious.join("sub/data.parquet")).unwrap(), b"PAR1");
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, b"keep").unwrap();
    let o = demo(&file);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is not a directory"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");

    // A new directory is made and marked; a later run clears what the earlier one left.
    let work = dir.path().join("demo");
    let o = demo(&work);
    assert!(stderr(&o).contains(&format!("ClickHouse at {url} did not answer")), "{}", stderr(&o));
    assert!(work.join(".cdrflow-demo").is_file(), "the demo marks the directory it made");
    std::fs::write(work.join("left-by-the-last-run"), b"x").unwrap();
    let o = demo(&work);
    assert!(stderr(&o).contains(&format!("ClickHouse at {url} did not answer")), "{}", stderr(&o));
    assert!(!work.join("left-by-the-last-run").exists(), "the demo's own workdir is cleared");
}

#[test]
fn config_check_names_every_missing_secret_at_once() {
    let dir = TestDir::new();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[secrets]\ncaller_key_file = \"missing-key\"\nclickhouse_password_file = \"missing-password\"\n",
    )
    .unwrap();
    let o = cdrflow(&["config", "check", cfg.to_str().unwrap()], &[]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("missing-key") && e.contains("missing-password"), "both missing files named: {e}");
}

/// A mistyped or dead broker: one clear line naming the address and the fix (repeated at
/// most every 30 s), a metric and an unready `/readyz` — not a flood of librdkafka's retries.
#[test]
fn an_unreachable_broker_gets_one_clear_error_not_a_flood() {
    let dir = TestDir::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = dir.path().join("ingest.log");
    let args: Vec<String> = ["ingest", "--brokers", "127.0.0.1:1", "--out", dir.path().join("a").to_str().unwrap()]
        .into_iter()
        .chain(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .map(String::from)
        .collect();
    let mut w = spawn_ingest(&args, &log);
    std::thread::sleep(std::time::Duration::from_secs(12));
    let (status, body) = http_get(port, "/readyz").unwrap();
    let scrape = http_get(port, "/metrics").unwrap().1;
    assert!(sigterm(&mut w));
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("Kafka cannot be reached"), "{body}");
    assert_eq!(metric(&scrape, "cdrflow_kafka_unreachable"), 1, "{scrape}");
    assert!(metric(&scrape, "cdrflow_kafka_errors_total") > 0, "{scrape}");
    let text = std::fs::read_to_string(&log).unwrap();
    let said: Vec<&str> = text.lines().filter(|l| l.contains("cannot be reached")).collect();
    assert_eq!(said.len(), 1, "said once in 12 s:\n{text}");
    assert!(said[0].contains("127.0.0.1:1") && said[0].contains("deploy/local/kafka.sh start"), "{}", said[0]);
    let noisy = text.lines().filter(|l| l.contains("ERROR") || l.contains("WARN")).count();
    assert!(noisy <= 3, "{noisy} ERROR/WARN lines in 12 s:\n{text}");

    // The feed generator too: one clear line, then a clear failure once delivery times out.
    let o = cdrflow(
        &["generate", "--cdrs", "50", "--brokers", "127.0.0.1:1", "--kafka-option", "message.timeout.ms=4000"],
        &[],
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.matches("cannot be reached").count() == 1, "{e}");
    assert!(e.lines().count() <= 8, "{e}");
}

#[test]
fn an_avro_feed_without_a_registry_or_a_topic_is_refused_with_the_fix() {
    let o = cdrflow(&["aggregate", "--brokers", "127.0.0.1:9", "--format", "avro-confluent", "--dry-run"], &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("needs --schema-registry URL"), "{}", stderr(&o));
    let o = cdrflow(
        &[
            "validate",
            "--format",
            "avro-confluent",
            "--schema-registry",
            "http://127.0.0.1:9/apis/ccompat/v7",
            "/dev/null",
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("give --brokers and --topic"), "{}", stderr(&o));
    let o = cdrflow(&["generate", "--format", "avro-confluent", "--schema-registry", "ftp://x"], &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("expected an http:// or https:// URL"), "{}", stderr(&o));
    // A registry that does not answer is named, with the fix.
    let o = cdrflow(
        &[
            "generate",
            "--format",
            "avro-confluent",
            "--schema-registry",
            "http://127.0.0.1:9/apis/ccompat/v7",
            "--brokers",
            "127.0.0.1:9",
        ],
        &[],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("schema registry at http://127.0.0.1:9/apis/ccompat/v7 unreachable"), "{}", stderr(&o));
    assert!(stderr(&o).contains("registry.sh start"), "{}", stderr(&o));
}

/// `validate` never writes its rejects over the file it reads, and an empty input is a
/// check of nothing: it says so and fails.
#[test]
fn validate_refuses_its_input_as_the_rejects_file_and_fails_on_nothing_read() {
    let dir = TestDir::new();
    let feed = dir.path().join("feed.jsonl");
    let record = r#"{"call_id":"38-1","region":38,"dialled":"122","start":"2022-02-14T09:00:00Z","end":"2022-02-14T09:03:12Z","disposition":"busy"}"#;
    std::fs::write(&feed, format!("{record}\nnot json\n")).unwrap();
    let path = feed.to_str().unwrap();
    // The same file under another spelling is still the same file.
    let other_spelling = format!("{}/./feed.jsonl", dir.path().display());
    let o = cdrflow(&["validate", "--format", "json", "--rejects", &other_spelling, path], &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is the file being validated"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&feed).unwrap(), format!("{record}\nnot json\n"), "the feed is untouched");

    let rejects = dir.path().join("rejects.tsv");
    let o = cdrflow(&["validate", "--format", "json", "--rejects", rejects.to_str().unwrap(), path], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((report["accepted"].as_u64(), report["rejected"].as_u64()), (Some(1), Some(1)), "{report}");
    assert_eq!(std::fs::read_to_string(&rejects).unwrap().lines().count(), 1);

    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, b"").unwrap();
    let o = cdrflow(&["validate", "--format", "json", empty.to_str().unwrap()], &[]);
    assert!(!o.status.success(), "an empty file validated nothing");
    assert!(stderr(&o).contains("no records in") && stderr(&o).contains("empty.jsonl"), "{}", stderr(&o));
}

/// Each kind of worker reads its own group variable, so one environment shared by both
/// cannot put them in one Kafka group (each would read only part of the topic); the old
/// shared variable is refused rather than ignored (ignoring it would start a worker in the
/// default group, from the topic's start).
#[test]
fn ingest_workers_and_aggregators_read_their_own_group_variables() {
    let both = [("CDRFLOW_INGEST_GROUP", "archive-workers"), ("CDRFLOW_AGGREGATE_GROUP", "counter-workers")];
    let key = ("CDRFLOW_CALLER_KEY", "0123456789abcdef0123456789abcdef");
    let dry = |cmd: &str, envs: &[(&str, &str)]| -> Output {
        let mut args = vec![cmd, "--dry-run", "--brokers", "127.0.0.1:1"];
        args.extend(match cmd {
            "ingest" => ["--out", "/nonexistent/never-made"],
            _ => ["--clickhouse", "http://127.0.0.1:1"],
        });
        cdrflow(&args, envs)
    };
    for (cmd, group) in [("ingest", "archive-workers"), ("aggregate", "counter-workers")] {
        let o = dry(cmd, &[both[0], both[1], key]);
        assert!(o.status.success(), "{cmd}: {}", stderr(&o));
        let shown: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(shown["kafka"]["group"], group, "{cmd}: {shown}");
        let o = dry(cmd, &[("CDRFLOW_GROUP", "shared"), both[0], both[1], key]);
        assert!(!o.status.success(), "{cmd} with CDRFLOW_GROUP set");
        assert!(stderr(&o).contains("CDRFLOW_GROUP is set, but is no longer read"), "{cmd}: {}", stderr(&o));
    }
}

/// A user or password in a URL would be shown in plans, logs and errors: refused, without
/// repeating it; a URL that is not ClickHouse's HTTP interface is named as such.
#[test]
fn urls_with_credentials_are_refused_without_showing_them() {
    for args in [
        vec!["migrate", "--dry-run", "--clickhouse", "http://admin:hunter2@127.0.0.1:1"],
        vec![
            "aggregate",
            "--dry-run",
            "--brokers",
            "127.0.0.1:1",
            "--clickhouse",
            "https://admin:hunter2@ch.example:8443",
        ],
        vec![
            "generate",
            "--format",
            "avro-confluent",
            "--schema-registry",
            "http://u:hunter2@127.0.0.1:9/apis/ccompat/v7",
            "--cdrs",
            "1",
            "--out",
            "/dev/null",
        ],
    ] {
        let o = cdrflow(&args, &[]);
        assert!(!o.status.success(), "{args:?}");
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
        assert!(text.contains("holds a user or password"), "{args:?}: {text}");
        assert!(!text.contains("hunter2"), "{args:?}: the password is not repeated: {text}");
    }
    let o = cdrflow(&["aggregate", "--dry-run", "--brokers", "127.0.0.1:1", "--clickhouse", "127.0.0.1:8123"], &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("expected ClickHouse's HTTP interface as http://HOST:PORT"), "{}", stderr(&o));
}

/// `generate` refuses a rate that would stop it (or panic) and one file named for two
/// outputs (the truth would be written over the feed).
#[test]
fn generate_refuses_a_rate_of_nothing_and_one_file_for_two_outputs() {
    for rate in ["--rate=0", "--rate=-5", "--rate=NaN"] {
        let o = cdrflow(&["generate", "--cdrs", "3", "--out", "/dev/null", rate], &[]);
        assert!(!o.status.success(), "{rate}");
        assert!(stderr(&o).contains("messages per second must be above 0"), "{rate}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{rate}: {}", stderr(&o));
    }
    let dir = TestDir::new();
    let feed = dir.path().join("feed.jsonl");
    let o =
        cdrflow(&["generate", "--cdrs", "3", "--out", feed.to_str().unwrap(), "--truth", feed.to_str().unwrap()], &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--out and --truth both name"), "{}", stderr(&o));
    assert!(!feed.exists(), "nothing was written");
}

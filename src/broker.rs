//! `cdrflow broker`: librdkafka's mock cluster hosted in its own process.
//!
//! This is the embedded Kafka for tests and the demo, **not a product feature**: it keeps
//! about 5 MiB per partition and silently drops older data, and it lives in memory only.
//! Being a separate process lets a test SIGKILL the pipeline while the broker lives on.
//!
//! The bootstrap address is printed as the first line of stdout (and written to
//! `--address-file` if given), then the process serves until SIGTERM/SIGINT or SIGKILL.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, Producer};

/// How to start the mock cluster.
#[derive(Clone, Debug)]
pub struct BrokerOptions {
    /// Number of brokers.
    pub brokers: i32,
    /// Topics to create, each with `partitions` partitions.
    pub topics: Vec<String>,
    /// Partitions per topic.
    pub partitions: i32,
    /// Also write the bootstrap address to this file (atomically).
    pub address_file: Option<std::path::PathBuf>,
    /// Read fault-injection commands from stdin (see [`Fault`]).
    pub control: bool,
}

/// A fault to inject, one per line on stdin with `--control` (for tests); each line is
/// answered `ok` or `error: …` on stdout:
///
/// - `down ID` / `up ID`: broker ID (1-based) stops or starts answering;
/// - `rtt ID MS`: broker ID delays every response by MS milliseconds (0 to clear);
/// - `errors API CODE N`: the next N requests of API (`Fetch`, `Produce`, `JoinGroup`,
///   `Heartbeat`, `SyncGroup`, `OffsetCommit`, `FindCoordinator`, `Metadata`, `ListOffsets`)
///   fail with CODE (`NOT_LEADER_FOR_PARTITION`, `LEADER_NOT_AVAILABLE`,
///   `REQUEST_TIMED_OUT`, `NOT_COORDINATOR`, `COORDINATOR_NOT_AVAILABLE`, `BROKER_NOT_AVAILABLE`).
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    #[allow(missing_docs)]
    Down(i32),
    #[allow(missing_docs)]
    Up(i32),
    #[allow(missing_docs)]
    Rtt(i32, Duration),
    #[allow(missing_docs)]
    Errors(rdkafka::types::RDKafkaApiKey, rdkafka::types::RDKafkaRespErr, usize),
}

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(line: &str) -> Result<Fault, String> {
        use rdkafka::types::{RDKafkaApiKey as K, RDKafkaRespErr as E};
        let w: Vec<&str> = line.split_whitespace().collect();
        let int = |s: &str| s.parse::<i64>().map_err(|_| format!("`{s}` is not a number"));
        Ok(match w.as_slice() {
            ["down", id] => Fault::Down(int(id)? as i32),
            ["up", id] => Fault::Up(int(id)? as i32),
            ["rtt", id, ms] => Fault::Rtt(int(id)? as i32, Duration::from_millis(int(ms)? as u64)),
            ["errors", api, code, n] => {
                let api = match *api {
                    "Fetch" => K::Fetch,
                    "Produce" => K::Produce,
                    "JoinGroup" => K::JoinGroup,
                    "Heartbeat" => K::Heartbeat,
                    "SyncGroup" => K::SyncGroup,
                    "OffsetCommit" => K::OffsetCommit,
                    "FindCoordinator" => K::FindCoordinator,
                    "Metadata" => K::Metadata,
                    "ListOffsets" => K::ListOffsets,
                    other => return Err(format!("unknown API `{other}`")),
                };
                let code = match *code {
                    "NOT_LEADER_FOR_PARTITION" => E::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                    "LEADER_NOT_AVAILABLE" => E::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
                    "REQUEST_TIMED_OUT" => E::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                    "NOT_COORDINATOR" => E::RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
                    "COORDINATOR_NOT_AVAILABLE" => E::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
                    "BROKER_NOT_AVAILABLE" => E::RD_KAFKA_RESP_ERR_BROKER_NOT_AVAILABLE,
                    other => return Err(format!("unknown error code `{other}`")),
                };
                Fault::Errors(api, code, int(n)? as usize)
            }
            _ => return Err(format!("`{line}`: expected down ID | up ID | rtt ID MS | errors API CODE N")),
        })
    }
}

/// A running mock cluster; dropping it stops the brokers.
pub struct MockBroker {
    /// The client that owns the cluster.
    client: BaseProducer,
    bootstrap: String,
}

impl MockBroker {
    /// Starts the brokers and creates the topics.
    pub fn start(opts: &BrokerOptions) -> Result<MockBroker> {
        if opts.brokers < 1 || opts.partitions < 1 {
            bail!("--brokers and --partitions must be at least 1");
        }
        // A client created with test.mock.num.brokers owns a mock cluster; keeping the
        // client alive keeps the cluster alive.
        let client: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", opts.brokers.to_string())
            .set("log_level", "3")
            .create()
            .context("starting librdkafka's mock cluster")?;
        let bootstrap = {
            let mock = client.client().mock_cluster().context("the client has no mock cluster")?;
            for topic in &opts.topics {
                mock.create_topic(topic, opts.partitions, opts.brokers.min(3))
                    .with_context(|| format!("creating topic {topic}"))?;
            }
            mock.bootstrap_servers()
        };
        // New groups would otherwise wait 3 s before their first assignment.
        // SAFETY: the pointer is the live cluster owned by `client`, which outlives the call.
        unsafe {
            let raw = rdkafka::bindings::rd_kafka_handle_mock_cluster(client.client().native_ptr());
            if !raw.is_null() {
                rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(raw, 0);
            }
        }
        Ok(MockBroker { client, bootstrap })
    }

    /// The `bootstrap.servers` list.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Applies one fault to the cluster.
    pub fn inject(&self, f: &Fault) -> Result<()> {
        let c = self.cluster();
        match f {
            Fault::Down(id) => c.broker_down(*id)?,
            Fault::Up(id) => c.broker_up(*id)?,
            Fault::Rtt(id, d) => c.broker_round_trip_time(*id, *d)?,
            Fault::Errors(api, code, n) => c.request_errors(*api, &vec![*code; *n]),
        }
        Ok(())
    }

    /// The mock cluster, for fault injection.
    pub fn cluster(&self) -> rdkafka::mocking::MockCluster<'_, rdkafka::producer::DefaultProducerContext> {
        self.client.client().mock_cluster().expect("created with a mock cluster")
    }
}

/// Runs `cdrflow broker` until a signal.
pub fn run(opts: BrokerOptions) -> Result<()> {
    let broker = MockBroker::start(&opts)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", broker.bootstrap())?;
    out.flush()?;
    if let Some(path) = &opts.address_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{}\n", broker.bootstrap()))
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    }
    tracing::info!(bootstrap = broker.bootstrap(), brokers = opts.brokers, partitions = opts.partitions, topics = ?opts.topics, "mock Kafka cluster up (tests and demo only)");
    let stop = crate::signals::stop_flag()?;
    let faults = opts.control.then(|| {
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::stdin().lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    });
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        broker.client.poll(Duration::from_millis(50));
        for line in faults.iter().flat_map(|rx| rx.try_iter()) {
            let answer = match line.parse::<Fault>().and_then(|f| broker.inject(&f).map_err(|e| e.to_string())) {
                Ok(()) => "ok".to_owned(),
                Err(e) => format!("error: {e}"),
            };
            tracing::info!(command = line, answer, "fault injection");
            writeln!(out, "{answer}")?;
            out.flush()?;
        }
    }
    tracing::info!("mock Kafka cluster stopping");
    Ok(())
}

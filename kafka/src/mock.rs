//! `cdrflow broker`: librdkafka's mock cluster hosted in its own process.
//!
//! This is the embedded Kafka for `cdrflow demo --embedded-broker` on a machine without Java,
//! **not a product feature**: it keeps about 5 MiB per partition and silently drops older
//! data, lives in memory only, and under injected faults loses and repeats acknowledged
//! messages — so no test judges a sink by it; they run on the real broker
//! (`deploy/local/kafka.sh`). Being a separate process, it outlives the workers it serves.
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
}

/// Runs `cdrflow broker` until `stop` is set (SIGTERM/SIGINT) or the process is killed.
pub fn run(opts: BrokerOptions, stop: &'static std::sync::atomic::AtomicBool) -> Result<()> {
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
    tracing::info!(bootstrap = broker.bootstrap(), brokers = opts.brokers, partitions = opts.partitions, topics = ?opts.topics,
        "mock Kafka cluster up (for the demo on a machine without Java)");
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        broker.client.poll(Duration::from_millis(50));
    }
    tracing::info!("mock Kafka cluster stopping");
    Ok(())
}

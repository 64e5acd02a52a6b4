//! Producing to Kafka: the settings every cdrflow producer shares.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

/// Counts delivery reports, so that a producer can tell whether everything arrived.
#[derive(Default)]
pub struct Deliveries {
    /// Messages the brokers acknowledged.
    pub delivered: AtomicU64,
    /// Messages that failed for good.
    pub failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.delivered.fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                tracing::warn!(error = %e, "a message was not delivered");
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// A counting producer.
pub type CountingProducer = BaseProducer<Deliveries>;

/// A producer tuned for throughput with compressed batches (the mock broker keeps only
/// ~5 MiB per partition, so compression matters there too). Idempotent, so retries after
/// a broker fault neither lose nor duplicate.
pub fn producer(brokers: &str) -> Result<CountingProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("compression.type", "lz4")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .set("enable.idempotence", "true")
        .create_with_context(Deliveries::default())
        .with_context(|| format!("creating a Kafka producer for {brokers}"))
}

/// Sends one message, waiting (and serving delivery reports) while the local queue is full.
pub fn send(producer: &CountingProducer, topic: &str, key: &[u8], payload: &[u8]) -> Result<()> {
    loop {
        match producer.send(BaseRecord::to(topic).key(key).payload(payload)) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(50));
            }
            Err((e, _)) => return Err(e).with_context(|| format!("producing to topic {topic}")),
        }
    }
}

/// Waits until every queued message is delivered; fails if any was not.
pub fn flush(producer: &CountingProducer, timeout: Duration) -> Result<u64> {
    producer
        .flush(timeout)
        .with_context(|| format!("Kafka did not take every message within {timeout:?}: are the brokers reachable?"))?;
    let ctx = producer.context();
    let failed = ctx.failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} messages were not delivered (see the warnings above)");
    }
    Ok(ctx.delivered.load(Ordering::Relaxed))
}

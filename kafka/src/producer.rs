//! Producing to Kafka: the settings every cdrflow producer shares.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use crate::KafkaSettings;

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
pub fn producer(settings: &KafkaSettings) -> Result<CountingProducer> {
    let mut c = settings.client_config();
    for (k, v) in [
        ("compression.type", "lz4"),
        ("linger.ms", "20"),
        ("batch.num.messages", "10000"),
        ("queue.buffering.max.messages", "500000"),
        ("enable.idempotence", "true"),
    ] {
        if c.get(k).is_none() {
            c.set(k, v);
        }
    }
    c.create_with_context(Deliveries::default())
        .with_context(|| format!("creating a Kafka producer for {}", settings.brokers))
}

/// Sends one message, waiting (and serving delivery reports) while the local queue is full.
pub fn send(producer: &CountingProducer, record: BaseRecord<'_, [u8], [u8]>) -> Result<()> {
    let mut record = record;
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.poll(Duration::from_millis(50));
            }
            Err((e, r)) => return Err(e).with_context(|| format!("producing to topic {}", r.topic)),
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

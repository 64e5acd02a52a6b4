//! Producing to Kafka: the settings every cdrflow producer shares.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use std::sync::Arc;

use crate::KafkaHealth;
use crate::settings::{KafkaSettings, Property};

/// Counts delivery reports, so that a producer can tell whether everything arrived, and
/// reports the brokers' health (see [`crate::health`]).
///
/// A message may be *tracked*: sent with a number above 0 as its delivery opaque, noted in
/// [`Deliveries::outstanding`] first. Its report removes it, so a sender can tell that
/// every message up to some number has arrived without waiting for the later ones
/// ([`crate::DeadLetters::flush_to`]). Untracked messages carry 0.
pub struct Deliveries {
    /// Messages the brokers acknowledged.
    pub delivered: AtomicU64,
    /// Messages that failed for good.
    pub failed: AtomicU64,
    /// The numbers of the tracked messages not yet reported.
    pub outstanding: Mutex<BTreeSet<usize>>,
    /// Where errors and librdkafka's log lines go (a worker shares its own).
    pub health: Arc<KafkaHealth>,
    /// The bootstrap servers, for messages about them.
    brokers: String,
    /// Which producer this is, for messages (`dead-letter producer`, `feed producer`).
    role: &'static str,
}

impl ClientContext for Deliveries {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.health.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.health.error(&self.brokers, self.role, &error, reason);
    }
}

impl ProducerContext for Deliveries {
    /// The message's number if tracked, else 0.
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, number: usize) {
        if number > 0 {
            self.outstanding.lock().unwrap_or_else(|e| e.into_inner()).remove(&number);
        }
        match result {
            Ok(_) => {
                if self.delivered.fetch_add(1, Ordering::Relaxed).is_multiple_of(1024) {
                    self.health.answered(&self.brokers);
                }
            }
            Err((e, _)) => {
                if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(error = %e, role = self.role, "a message was not delivered (further failures are counted, not logged)");
                }
            }
        };
    }
}

/// The producer's tuning, under the operator's properties: lz4-compressed batches (any
/// codec with `compression.type`: none, gzip, snappy, lz4, zstd), idempotent, so retries
/// after a broker fault neither lose nor duplicate.
pub const PRODUCER_TUNING: &[(&str, &str)] = &[
    ("compression.type", "lz4"),
    ("linger.ms", "20"),
    ("batch.num.messages", "10000"),
    ("queue.buffering.max.messages", "500000"),
    ("enable.idempotence", "true"),
];

/// A counting producer.
pub type CountingProducer = BaseProducer<Deliveries>;

/// The effective properties of a cdrflow producer: [`PRODUCER_TUNING`] under the operator's.
pub fn properties(settings: &KafkaSettings) -> Vec<Property> {
    settings.layered_for(crate::settings::Role::Producer, PRODUCER_TUNING, &[])
}

/// A producer with [`properties`]; its errors and log lines go to `health`.
pub fn producer(settings: &KafkaSettings, health: Arc<KafkaHealth>, role: &'static str) -> Result<CountingProducer> {
    let ctx = Deliveries {
        delivered: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        outstanding: Mutex::new(BTreeSet::new()),
        health,
        brokers: settings.brokers.clone(),
        role,
    };
    crate::settings::client_config(&properties(settings))
        .create_with_context(ctx)
        .with_context(|| format!("creating a Kafka producer for {}", settings.brokers))
}

/// Sends one message, waiting (and serving delivery reports) while the local queue is full.
/// The record's delivery opaque is its number if tracked ([`Deliveries`]), else 0.
pub fn send(producer: &CountingProducer, record: BaseRecord<'_, [u8], [u8], usize>) -> Result<()> {
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
    producer.flush(timeout).with_context(|| {
        format!(
            "Kafka at {} did not take every message within {timeout:?}: are the brokers reachable? Locally: deploy/local/kafka.sh start",
            producer.context().brokers
        )
    })?;
    let ctx = producer.context();
    let failed = ctx.failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} messages were not delivered (see the warnings above)");
    }
    Ok(ctx.delivered.load(Ordering::Relaxed))
}

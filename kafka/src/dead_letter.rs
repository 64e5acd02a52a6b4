//! The dead-letter topic: every rejected message, with its original bytes and key, and
//! headers saying why and where it came from:
//!
//! | header                     | value                               |
//! |----------------------------|-------------------------------------|
//! | `cdrflow-reason`           | the reason code (`missing_field`, …) |
//! | `cdrflow-field`            | the wire field, if any              |
//! | `cdrflow-detail`           | a human explanation                 |
//! | `cdrflow-source-topic`     | topic it was read from              |
//! | `cdrflow-source-partition` | partition (decimal)                 |
//! | `cdrflow-source-offset`    | offset (decimal)                    |
//! | `cdrflow-group`            | the consumer group that rejected it |
//!
//! | `cdrflow-truncated-from`   | for a payload over 256 KiB: its size; the payload is its first 256 KiB (the whole message stays in the source topic at that offset) |
//! | `cdrflow-key-truncated-from` | for a key over 64 KiB: its size; the key is its first 64 KiB |
//!
//! So a dead letter stays well under a producer's 1 MB message limit whatever it was sent
//! (the detail is at most [`cdrflow_schemas::reject::MAX_DETAIL`] bytes): one that did not
//! fit would fail to send, and the worker would stop at that message every time it restarted.
//!
//! Delivery is at least once: a worker has the dead letters of a unit of work delivered before
//! it records that unit's offsets in its sink, so a crash can re-send a dead letter (same
//! source partition/offset: readers de-duplicate on those) but never lose one.

use std::time::Duration;

use anyhow::Result;
use cdrflow_schemas::Rejection;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};

use crate::KafkaSettings;
use crate::producer::{CountingProducer, flush, producer, send};

/// The most of a rejected payload a dead letter carries (Kafka's default message limit is 1 MB).
pub const MAX_PAYLOAD: usize = 256 * 1024;

/// The most of a rejected message's key a dead letter carries.
pub const MAX_KEY: usize = 64 * 1024;

/// Sends rejected messages to the dead-letter topic.
pub struct DeadLetters {
    producer: CountingProducer,
    topic: String,
    group: String,
    /// Dead letters sent and not yet flushed.
    unflushed: u64,
    /// Dead letters queued since the start: the last one's number ([`Deliveries`]' tracking).
    ///
    /// [`Deliveries`]: crate::producer::Deliveries
    queued: usize,
}

impl DeadLetters {
    /// A dead-letter sender to `topic`; its errors count in `health` (the worker's).
    pub fn new(
        settings: &KafkaSettings,
        topic: &str,
        group: &str,
        health: std::sync::Arc<crate::KafkaHealth>,
    ) -> Result<Self> {
        Ok(DeadLetters {
            producer: producer(settings, health, "dead-letter producer")?,
            topic: topic.to_owned(),
            group: group.to_owned(),
            unflushed: 0,
            queued: 0,
        })
    }

    /// Queues one rejected message.
    pub fn send(
        &mut self,
        source_topic: &str,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        payload: &[u8],
        why: &Rejection,
    ) -> Result<()> {
        let (p, o) = (partition.to_string(), offset.to_string());
        let headers = OwnedHeaders::new()
            .insert(Header { key: "cdrflow-reason", value: Some(why.reason.code()) })
            .insert(Header { key: "cdrflow-field", value: Some(why.field.unwrap_or("")) })
            .insert(Header { key: "cdrflow-detail", value: Some(why.detail.as_str()) })
            .insert(Header { key: "cdrflow-source-topic", value: Some(source_topic) })
            .insert(Header { key: "cdrflow-source-partition", value: Some(p.as_str()) })
            .insert(Header { key: "cdrflow-source-offset", value: Some(o.as_str()) })
            .insert(Header { key: "cdrflow-group", value: Some(self.group.as_str()) });
        // A hostile message of many MiB would exceed the topic's message size: keep a prefix
        // (enough to see what it was) and say how big it was.
        let (payload, headers) = if payload.len() > MAX_PAYLOAD {
            let size = payload.len().to_string();
            let h = headers.insert(Header { key: "cdrflow-truncated-from", value: Some(size.as_str()) });
            (&payload[..MAX_PAYLOAD], h)
        } else {
            (payload, headers)
        };
        // A key of many KiB (the broker takes what compresses under its limit) likewise.
        let (key, headers) = match key {
            Some(k) if k.len() > MAX_KEY => {
                let size = k.len().to_string();
                let h = headers.insert(Header { key: "cdrflow-key-truncated-from", value: Some(size.as_str()) });
                (Some(&k[..MAX_KEY]), h)
            }
            _ => (key, headers),
        };
        let number = self.queued + 1;
        let mut record = BaseRecord::with_opaque_to(&self.topic, number).payload(payload).headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        let outstanding = || self.producer.context().outstanding.lock().unwrap_or_else(|e| e.into_inner());
        outstanding().insert(number);
        send(&self.producer, record).inspect_err(|_| {
            outstanding().remove(&number);
        })?;
        self.queued = number;
        self.unflushed += 1;
        Ok(())
    }

    /// The number of the last dead letter queued: a mark for [`DeadLetters::flush_to`].
    pub fn mark(&self) -> usize {
        self.queued
    }

    /// Makes sure every dead letter queued up to `mark` is in Kafka; call before recording
    /// the offsets of the messages read before the mark. A worker that takes the mark when
    /// it closes a unit and commits the unit later usually finds that they arrived meanwhile,
    /// and then waits for nothing; otherwise this is a whole [`DeadLetters::flush`].
    pub fn flush_to(&mut self, mark: usize) -> Result<()> {
        // Serves the delivery reports that arrived: each removes its number.
        self.producer.poll(Duration::ZERO);
        let ctx = self.producer.context();
        let oldest = ctx.outstanding.lock().unwrap_or_else(|e| e.into_inner()).first().copied();
        if ctx.failed.load(std::sync::atomic::Ordering::Relaxed) == 0 && oldest.is_none_or(|n| n > mark) {
            return Ok(());
        }
        self.flush()
    }

    /// Waits until every queued dead letter is in Kafka; call before recording offsets.
    pub fn flush(&mut self) -> Result<()> {
        if self.unflushed > 0 {
            flush(&self.producer, Duration::from_secs(60))?;
            self.unflushed = 0;
        }
        Ok(())
    }

    /// Serves delivery reports; call now and then.
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }
}

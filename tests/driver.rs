//! The shared worker loop on the real broker, with messages read ahead of the sink: a sink
//! that seeks a partition back (as the aggregator does when another writer's unit landed over
//! its offsets) sees that partition continue from exactly where it sought, and none of the
//! messages that had been read ahead of the seek. And the dead letters of a unit closed
//! earlier are in Kafka before its offsets are recorded, without waiting for those queued
//! after it.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use cdrflow_kafka::driver::{Due, Io, Sink};
use cdrflow_kafka::{GroupChange, PositionStore, SourceOptions, WorkerConsumer, WorkerStats};
use cdrflow_schemas::{Cdr, Decoder, LineRegistry, Pseudonymiser};
use common::*;
use rdkafka::Offset;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

/// Messages in the partition.
const MESSAGES: i64 = 20_000;
/// The sink seeks back once it has handled this offset…
const SEEK_AFTER: i64 = 5_000;
/// …to this one.
const SEEK_TO: i64 = 1_000;

/// A sink that records the offsets it is handed, in order, and seeks once.
struct Recorder {
    held: BTreeSet<i32>,
    /// Offsets of partition 0, in the order handled.
    handled: Vec<i64>,
    /// librdkafka's read position of partition 0 when the sink sought back: how far the
    /// driver had read ahead of the sink.
    read_when_sought: Option<i64>,
    stop: &'static AtomicBool,
}

impl Sink for Recorder {
    const WORKER: &'static str = "test";

    fn group_change(&mut self, change: GroupChange) {
        match change {
            GroupChange::Assigned(p) => self.held.extend(p),
            GroupChange::Revoked(p) => self.held.retain(|h| !p.contains(h)),
        }
    }

    fn saw(&mut self, partition: i32, offset: i64) -> bool {
        if !self.held.contains(&partition) {
            return false;
        }
        self.handled.push(offset);
        if offset == MESSAGES - 1 && self.read_when_sought.is_some() {
            self.stop.store(true, Ordering::Relaxed);
        }
        true
    }

    fn accept(&mut self, _: i32, _: i64, _: Cdr, _: &WorkerStats) {}

    fn due(&self, _: Option<i32>, _: Option<std::time::Instant>) -> Due {
        if self.read_when_sought.is_none() && self.handled.last() == Some(&SEEK_AFTER) {
            Due::Partitions(vec![0])
        } else {
            Due::Nothing
        }
    }

    fn write(&mut self, due: Due, io: &mut Io<'_>) -> Result<()> {
        if due == Due::Partitions(vec![0]) && self.read_when_sought.is_none() {
            let position = io.consumer.position()?;
            let read = position.find_partition(&io.consumer.topic, 0).map(|e| e.offset());
            let Some(Offset::Offset(read)) = read else { anyhow::bail!("no read position: {read:?}") };
            self.read_when_sought = Some(read);
            io.consumer.reposition(0, Offset::Offset(SEEK_TO))?;
        }
        Ok(())
    }

    fn held(&self) -> Vec<i32> {
        self.held.iter().copied().collect()
    }
}

/// The recorder keeps no positions: every partition starts at the beginning.
struct FromTheBeginning;

impl PositionStore for FromTheBeginning {
    fn next_offsets(&self, _: &str, _: &[i32]) -> Result<HashMap<i32, i64>> {
        Ok(HashMap::new())
    }
    fn describe(&self) -> String {
        "the test's recorder".into()
    }
}

fn seek_back_while_reading_ahead(decode_threads: usize) -> Recorder {
    let kafka = Kafka::shared();
    let topic = kafka.topic("driver-seek", 1);
    let producer: ThreadedProducer<DefaultProducerContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &kafka.bootstrap).create().unwrap();
    for i in 0..MESSAGES {
        // Not CDRs: each is rejected, which the sink sees all the same (`saw`).
        let payload = format!("{{\"message\": {i}}}");
        producer.send(BaseRecord::<(), _>::to(&topic).partition(0).payload(&payload)).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
    let stats = Arc::new(WorkerStats::default());
    let settings = cdrflow_kafka::KafkaSettings { brokers: kafka.bootstrap.clone(), extra: Vec::new() };
    let group = format!("{topic}-recorder");
    let consumer =
        WorkerConsumer::new(&settings, &group, &topic, 6_000, Arc::new(FromTheBeginning), stop, stats.clone()).unwrap();
    let lines = LineRegistry::builtin();
    let src = SourceOptions {
        kafka: settings,
        group,
        topic,
        format: cdrflow_schemas::Format::Json,
        csv: cdrflow_schemas::CsvFeed::FromAccountcode,
        session_timeout_ms: 6_000,
        dead_letter_topic: None,
        lines: lines.clone(),
        registry: None,
        schema_wait: Duration::from_secs(1),
        decode_threads,
    };
    let decoder = Decoder::new(lines, Pseudonymiser::check_only());
    let mut sink = Recorder { held: BTreeSet::new(), handled: Vec::new(), read_when_sought: None, stop };
    // A watchdog, so that a driver that never hands over the last offset fails, not hangs.
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(90));
        stop.store(true, Ordering::Relaxed);
    });
    cdrflow_kafka::driver::run(&mut sink, &consumer, &decoder, &src, None, &stats, stop).unwrap();
    sink
}

fn assert_continues_from_the_seek(sink: &Recorder) {
    let expected: Vec<i64> = (0..=SEEK_AFTER).chain(SEEK_TO..MESSAGES).collect();
    if sink.handled != expected {
        let after = &sink.handled[(SEEK_AFTER + 1).min(sink.handled.len() as i64) as usize..];
        panic!(
            "the sink was handed {} offsets, not {}; after its seek back from {SEEK_AFTER} to {SEEK_TO} it was handed {:?}…",
            sink.handled.len(),
            expected.len(),
            &after[..after.len().min(8)]
        );
    }
}

#[test]
fn a_seek_by_the_sink_drops_what_was_read_ahead_of_it() {
    let sink = seek_back_while_reading_ahead(1);
    assert_continues_from_the_seek(&sink);
    // The check checked something: the driver had read past the seek's point.
    let read = sink.read_when_sought.expect("the sink sought");
    assert!(
        read > SEEK_AFTER + 1,
        "nothing was read ahead of the sink (read position {read}): the test proves nothing"
    );
}

#[test]
fn without_read_ahead_a_seek_by_the_sink_continues_from_it_too() {
    let sink = seek_back_while_reading_ahead(0);
    assert_continues_from_the_seek(&sink);
    assert_eq!(sink.read_when_sought, Some(SEEK_AFTER + 1), "one message at a time: read up to the one handled");
}

/// The ingest worker commits a unit after encoding it while reading on: the dead letters of
/// the unit (queued before its mark) must be in Kafka first, those queued since need not be.
#[test]
fn dead_letters_up_to_a_mark_are_delivered_without_waiting_for_later_ones() {
    let kafka = Kafka::shared();
    let topic = kafka.topic("driver-dead-letters", 2);
    // Later dead letters linger for 10 s unless something flushes them.
    let settings = cdrflow_kafka::KafkaSettings {
        brokers: kafka.bootstrap.clone(),
        extra: vec![("linger.ms".into(), "10000".into())],
    };
    let health = Arc::new(cdrflow_kafka::KafkaHealth::default());
    let mut dl = cdrflow_kafka::DeadLetters::new(&settings, &topic, "test-group", health).unwrap();
    let why = cdrflow_schemas::Rejection {
        reason: cdrflow_schemas::Reason::Malformed,
        field: None,
        detail: "not JSON".into(),
    };
    let in_kafka = || kafka.watermarks(&topic, 2).values().sum::<i64>();

    for offset in 0..500 {
        dl.send("cdrs", 0, offset, Some(b"k"), b"{", &why).unwrap();
    }
    let mark = dl.mark();
    assert_eq!(mark, 500);
    assert_eq!(in_kafka(), 0, "lingering, not yet sent");
    dl.flush_to(mark).unwrap();
    assert_eq!(in_kafka(), 500, "every dead letter up to the mark is in Kafka once flush_to returns");

    for offset in 500..800 {
        dl.send("cdrs", 0, offset, Some(b"k"), b"{", &why).unwrap();
    }
    dl.flush_to(mark).unwrap();
    assert_eq!(in_kafka(), 500, "the 300 queued after the mark were not waited for (they linger)");
    dl.flush_to(dl.mark()).unwrap();
    assert_eq!(in_kafka(), 800, "a later mark covers them");
}

//! Topic set-up for the commands that create a feed (`generate --partitions`, the demo).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use crate::KafkaSettings;

/// Creates `topic` with `partitions` partitions unless it exists (replication: the broker's
/// default), then waits until its metadata shows them. An existing topic is left as it is;
/// one with fewer partitions than asked is an error, as a feed keyed for N partitions
/// would land differently.
pub fn ensure_topic(settings: &KafkaSettings, topic: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = settings
        .client_config()
        .create()
        .with_context(|| format!("creating a Kafka admin client for {}", settings.brokers))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = rt
        .block_on(admin.create_topics([&new], &opts))
        .with_context(|| format!("creating topic {topic} at {}: is Kafka reachable?", settings.brokers))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => bail!("creating topic {t} at {}: {code}", settings.brokers),
        }
    }
    let probe: BaseConsumer = settings.client_config().create()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let md = probe.fetch_metadata(Some(topic), Duration::from_secs(5))?;
        let have = md.topics().first().map(|t| t.partitions().len() as i32).unwrap_or(0);
        if have >= partitions && md.topics()[0].error().is_none() {
            return Ok(());
        }
        if have > 0 && have < partitions {
            bail!("topic {topic} exists with {have} partitions, not {partitions}");
        }
        if std::time::Instant::now() > deadline {
            bail!("topic {topic} did not show {partitions} partitions within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Deletes these topics (the demo's own, at its end).
pub fn delete_topics(settings: &KafkaSettings, topics: &[String]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = settings.client_config().create()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for r in rt.block_on(admin.delete_topics(&names, &opts))? {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((t, code)) => bail!("deleting topic {t} at {}: {code}", settings.brokers),
        }
    }
    Ok(())
}

/// The high watermark of each of `partitions` partitions of `topic`.
pub fn watermarks(bootstrap: &str, topic: &str, partitions: u32) -> Result<std::collections::HashMap<i32, i64>> {
    let c: BaseConsumer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap).create().context("creating a Kafka client")?;
    (0..partitions as i32)
        .map(|p| {
            let (_, high) = c
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .with_context(|| format!("reading the end of {topic}/{p} at {bootstrap}"))?;
            Ok((p, high))
        })
        .collect()
}

/// Reads every message a topic holds now, partition by partition from its start to its
/// high watermark as of the call, without joining a group or committing anything (feed
/// onboarding: `cdrflow validate --brokers`). `each` gets the partition, the offset and
/// the payload; returns how many messages were read.
pub fn read_topic(
    settings: &KafkaSettings,
    topic: &str,
    mut each: impl FnMut(i32, i64, &[u8]) -> Result<()>,
) -> Result<u64> {
    use rdkafka::Message;
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    let c: BaseConsumer = settings
        .client_config()
        .set("group.id", "cdrflow-validate")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .context("creating a Kafka client")?;
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("reading the metadata of {topic} at {}: is Kafka running?", settings.brokers))?;
    let partitions: Vec<i32> = md.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    if partitions.is_empty() {
        bail!("topic {topic} does not exist at {}", settings.brokers);
    }
    let mut ends = std::collections::HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        let (low, high) = c
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .with_context(|| format!("reading the ends of {topic}/{p} at {}", settings.brokers))?;
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Offset(low))?;
        }
    }
    c.assign(&tpl).context("assigning the topic's partitions")?;
    let mut read = 0u64;
    let mut quiet = std::time::Instant::now();
    while !ends.is_empty() {
        match c.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                quiet = std::time::Instant::now();
                let (p, o) = (m.partition(), m.offset());
                if ends.get(&p).is_some_and(|end| o < *end) {
                    each(p, o, m.payload().unwrap_or(&[]))?;
                    read += 1;
                }
                if ends.get(&p).is_some_and(|end| o + 1 >= *end) {
                    ends.remove(&p);
                }
            }
            Some(Err(e)) => bail!("reading {topic} at {}: {e}", settings.brokers),
            None if quiet.elapsed() > Duration::from_secs(60) => {
                bail!(
                    "reading {topic} at {}: nothing arrived for 60 s with {} partitions unfinished",
                    settings.brokers,
                    ends.len()
                )
            }
            None => {}
        }
    }
    Ok(read)
}

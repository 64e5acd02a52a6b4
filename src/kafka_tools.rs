//! Small Kafka look-ups for the commands.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// The high watermark of each partition of `topic`.
pub fn watermarks(bootstrap: &str, topic: &str, partitions: u32) -> Result<HashMap<i32, i64>> {
    let c: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).create().context("creating a Kafka client")?;
    (0..partitions as i32)
        .map(|p| {
            let (_, high) = c
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .with_context(|| format!("reading the end of {topic}/{p} at {bootstrap}"))?;
            Ok((p, high))
        })
        .collect()
}

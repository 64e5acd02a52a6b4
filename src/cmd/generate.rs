//! `cdrflow generate`: the synthetic national feed, to a file, stdout or Kafka, with its
//! ground truth.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cdrflow_feed::{FeedOptions, Generator, Message, Pacer};

use super::{WireFormat, region_arg};

/// A producer's `compression.type`.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// Messages to produce (good, re-sent and bad together).
    #[arg(long, default_value_t = 100_000)]
    cdrs: u64,
    /// Seed: the same seed and options give the same bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Wire format.
    #[arg(long, value_enum, default_value = "json")]
    format: WireFormat,
    /// Write to this file instead of stdout (ignored with --brokers).
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Produce to Kafka at these bootstrap servers instead of writing lines.
    #[arg(long)]
    brokers: Option<String>,
    /// Kafka topic (with --brokers).
    #[arg(long, env = "CDRFLOW_TOPIC", default_value = "cdrs")]
    topic: String,
    /// With --brokers: create the topic with this many partitions first, if it does not
    /// exist (else the broker's auto-creation decides).
    #[arg(long)]
    partitions: Option<i32>,
    /// With --brokers: how the producer compresses its batches.
    #[arg(long, value_enum, default_value = "lz4")]
    compression: Compression,
    /// With --brokers: a librdkafka producer property KEY=VALUE (repeatable); overrides the
    /// producer's tuning (and --compression with compression.type).
    #[arg(long = "kafka-option", value_name = "KEY=VALUE")]
    kafka_options: Vec<String>,
    /// Messages per second (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// Write the exact expected counters per (region, line, UTC hour) here, as JSON lines;
    /// the summary (messages, valid, bad by reason, …) goes to FILE.summary.json unless
    /// --summary says otherwise.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Write the feed's summary here (default: TRUTH.summary.json when --truth is a file).
    #[arg(long)]
    summary: Option<PathBuf>,
    /// First instant of the feed (RFC 3339).
    #[arg(long, default_value = "2022-02-01T00:00:00Z")]
    start: String,
    /// National calls per day at the mean (sets how much time N calls span).
    #[arg(long, default_value_t = 320_000.0)]
    calls_per_day: f64,
    /// Only this region's centre (a CSV feed of one PBX); default all regions.
    #[arg(long)]
    region: Option<u8>,
    /// Share of deliberately bad records.
    #[arg(long, default_value_t = 0.005)]
    bad_share: f64,
    /// Share of records delivered 10 min–6 h late.
    #[arg(long, default_value_t = 0.01)]
    late_share: f64,
    /// Share of records sent a second time.
    #[arg(long, default_value_t = 0.002)]
    resent_share: f64,
    /// Call-id sequence numbers start after this (feeds made in slices use disjoint ranges).
    #[arg(long, default_value_t = 0)]
    first_seq: u64,
    #[command(flatten)]
    registry: super::RegistryArgs,
    /// For avro-confluent: the writer schema (an Avro schema file; default: the contract's
    /// schemas/avro/cdr_v1.avsc). Its fields are filled by name; fields the contract does
    /// not have take their defaults. Registered under --subject before the first message.
    #[arg(long)]
    avro_schema: Option<PathBuf>,
    /// For avro-confluent: the registry subject (default: TOPIC-value, Confluent's
    /// TopicNameStrategy).
    #[arg(long)]
    subject: Option<String>,
}

/// For an Avro feed: registers the writer schema and returns it with its id.
fn avro_writer(a: &GenerateArgs) -> Result<Option<cdrflow_feed::AvroWriter>> {
    let Some(registry) = a.registry.client(a.format.into())? else {
        if a.avro_schema.is_some() {
            bail!("--avro-schema is for --format avro-confluent");
        }
        return Ok(None);
    };
    if a.brokers.is_none() {
        bail!("an avro-confluent feed is binary and goes to Kafka: give --brokers (and --topic)");
    }
    let text = match &a.avro_schema {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("reading --avro-schema {}", p.display()))?,
        None => cdrflow_schemas::avro::CDR_V1_AVSC.to_owned(),
    };
    let schema = cdrflow_schemas::avro::Schema::parse_str(&text)
        .map_err(|e| anyhow::anyhow!("--avro-schema: not an Avro schema: {e}"))?;
    let subject = a.subject.clone().unwrap_or_else(|| format!("{}-value", a.topic));
    let id = registry.register(&subject, &text)?;
    tracing::info!(subject, id, registry = registry.url(), "writer schema registered");
    Ok(Some(cdrflow_feed::AvroWriter { id, schema }))
}

pub fn run(a: GenerateArgs) -> Result<()> {
    let start: jiff::Timestamp = a
        .start
        .parse()
        .with_context(|| format!("--start {}: expected an RFC 3339 instant such as 2022-02-01T00:00:00Z", a.start))?;
    for (name, v) in [("--bad-share", a.bad_share), ("--late-share", a.late_share), ("--resent-share", a.resent_share)]
    {
        if !(0.0..=0.5).contains(&v) {
            bail!("{name} must be between 0 and 0.5");
        }
    }
    if a.calls_per_day.is_nan() || a.calls_per_day <= 0.0 {
        bail!("--calls-per-day must be positive");
    }
    if let Some(rate) = a.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        bail!("--rate {rate}: messages per second must be above 0 (leave it out for as fast as possible)");
    }
    if let Some(p) = a.partitions
        && p < 1
    {
        bail!("--partitions {p}: a topic needs at least one partition");
    }
    // The feed, the truth and the summary are three files: one named twice would be
    // written over by the other.
    let files: Vec<(&str, &PathBuf)> = [("--out", &a.out), ("--truth", &a.truth), ("--summary", &a.summary)]
        .into_iter()
        .filter_map(|(f, p)| Some((f, p.as_ref()?)))
        .collect();
    for (i, (f1, p1)) in files.iter().enumerate() {
        for (f2, p2) in &files[i + 1..] {
            if super::same_file(p1, p2) && !p1.starts_with("/dev/") {
                bail!("{f1} and {f2} both name {}: each needs a file of its own", p1.display());
            }
        }
    }
    let opts = FeedOptions {
        cdrs: a.cdrs,
        seed: a.seed,
        format: a.format.into(),
        start_ms: start.as_millisecond(),
        calls_per_day: a.calls_per_day,
        region: region_arg(a.region)?,
        bad_share: a.bad_share,
        late_share: a.late_share,
        resent_share: a.resent_share,
        first_seq: a.first_seq,
        avro: avro_writer(&a)?,
    };
    let mut feed = Generator::new(opts);
    let bar = indicatif::ProgressBar::new(a.cdrs).with_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} CDRs {per_sec} eta {eta} {wide_bar}")
            .expect("template"),
    );
    let started = Instant::now();
    let pacer = Pacer::new(a.rate);
    let pace = |n: u64| {
        if n.is_multiple_of(1024) {
            bar.set_position(n);
        }
        pacer.after(n);
    };
    let mut n = 0u64;
    let topic = &a.topic;
    match &a.brokers {
        Some(brokers) => {
            let mut options = vec![format!("compression.type={}", a.compression.name())];
            options.extend(a.kafka_options.iter().cloned());
            let settings = super::kafka_settings(brokers, &options)?;
            if let Some(partitions) = a.partitions {
                cdrflow_kafka::admin::ensure_topic(&settings, topic, partitions)?;
            }
            let health = std::sync::Arc::new(cdrflow_kafka::KafkaHealth::default());
            let producer = cdrflow_kafka::producer::producer(&settings, health, "feed producer")?;
            let mut sink = |m: Message<'_>| -> std::io::Result<()> {
                let record = rdkafka::producer::BaseRecord::with_opaque_to(topic, 0).key(m.key).payload(m.payload);
                cdrflow_kafka::producer::send(&producer, record).map_err(std::io::Error::other)
            };
            while feed.emit_next(&mut sink)? {
                n += 1;
                pace(n);
            }
            let delivered = cdrflow_kafka::producer::flush(&producer, Duration::from_secs(120))?;
            tracing::info!(delivered, topic, "produced");
        }
        None => {
            let out: Box<dyn Write> = match &a.out {
                Some(p) => Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?),
                None => Box::new(std::io::stdout().lock()),
            };
            let mut out = BufWriter::with_capacity(1 << 20, out);
            let mut sink = |m: Message<'_>| -> std::io::Result<()> {
                out.write_all(m.payload)?;
                out.write_all(b"\n")
            };
            while feed.emit_next(&mut sink)? {
                n += 1;
                pace(n);
            }
            out.flush().context("writing the feed")?;
        }
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let summary = feed.summary();
    if feed.write_outputs(a.truth.as_deref(), a.summary.as_deref())?.is_none() && a.truth.is_some() {
        tracing::info!("no summary written: --truth is not a regular file; name one with --summary FILE");
    }
    tracing::info!(
        messages = summary.messages,
        valid = summary.valid_messages,
        resent = summary.resent,
        late = summary.late,
        bad = summary.bad,
        seconds = format!("{secs:.2}"),
        per_second = format!("{:.0}", summary.messages as f64 / secs),
        "feed generated"
    );
    Ok(())
}

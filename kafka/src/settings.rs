//! Connection settings shared by consumers and producers, and the effective librdkafka
//! properties a client is created with.
//!
//! A client's properties come in three layers, lowest first:
//!
//! 1. **tuning** — what cdrflow sets for speed unless the operator says otherwise
//!    ([`crate::consumer::CONSUMER_TUNING`], the producer's batching and compression);
//! 2. **operator** — `--kafka-option KEY=VALUE`, the config file's `[kafka.properties]`,
//!    and secrets from the environment; they override the tuning;
//! 3. **protocol** — what the exactly-once protocol needs (no auto-commit, positions from
//!    the sink, …); it overrides everything, and an operator value it overrides is kept in
//!    [`Property::ignored`] so that `--dry-run` and the start-up log can say so.

use rdkafka::ClientConfig;

/// What every worker reads: which topic, as which group, in which format.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    /// Kafka connection.
    pub kafka: KafkaSettings,
    /// Consumer group.
    pub group: String,
    /// Topic of CDRs.
    pub topic: String,
    /// Wire format of the topic.
    pub format: cdrflow_schemas::Format,
    /// Region source for CSV feeds.
    pub csv: cdrflow_schemas::CsvFeed,
    /// Kafka session timeout (how long a dead member's partitions wait before moving on).
    pub session_timeout_ms: u32,
    /// Dead-letter topic for rejected messages (`None`: only counted).
    pub dead_letter_topic: Option<String>,
    /// The line registry.
    pub lines: std::sync::Arc<cdrflow_schemas::LineRegistry>,
    /// The schema registry of an Avro feed (`--schema-registry`).
    pub registry: Option<std::sync::Arc<crate::registry::SchemaRegistry>>,
    /// How long an Avro writer schema id the registry does not know is waited for before
    /// its records are dead-lettered as `unknown_schema` (`--schema-wait-s`).
    pub schema_wait: std::time::Duration,
    /// Threads that decode batches of messages ahead of the sink (`--decode-threads`); 0:
    /// each message is decoded as it is handled ([`crate::driver::run`] says how).
    pub decode_threads: usize,
}

/// How to reach Kafka.
#[derive(Clone, Default)]
pub struct KafkaSettings {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Extra librdkafka properties passed through as given (TLS, SASL, timeouts), e.g.
    /// `security.protocol=SASL_SSL`, `sasl.mechanism=SCRAM-SHA-512`. Secrets such as
    /// `sasl.password` belong in the environment or a config file, not on a command line.
    pub extra: Vec<(String, String)>,
}

/// Secret properties (the SASL password from the environment, say) show as `<redacted>`:
/// the settings travel inside every worker's options, whose `Debug` may reach a log.
impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let extra: Vec<(&str, &str)> = self
            .extra
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret_property(k) { "<redacted>" } else { v.as_str() }))
            .collect();
        f.debug_struct("KafkaSettings").field("brokers", &self.brokers).field("extra", &extra).finish()
    }
}

impl KafkaSettings {
    /// A librdkafka configuration with the brokers and the pass-through properties only.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }

    /// [`Self::layered`] for a `role`, without the operator's properties only the other
    /// kind of client knows.
    pub fn layered_for(&self, role: Role, tuning: &[(&str, &str)], protocol: &[(&str, String)]) -> Vec<Property> {
        let own = KafkaSettings {
            brokers: self.brokers.clone(),
            extra: self.extra.iter().filter(|(k, _)| !foreign(role, k)).cloned().collect(),
        };
        own.layered(tuning, protocol)
    }

    /// The effective properties of a client: `tuning` under the operator's properties,
    /// `protocol` over both (see the module docs).
    pub fn layered(&self, tuning: &[(&str, &str)], protocol: &[(&str, String)]) -> Vec<Property> {
        let mut out: Vec<Property> = vec![Property {
            key: "bootstrap.servers".into(),
            value: self.brokers.clone(),
            source: Layer::Operator,
            ignored: None,
        }];
        let mut set = |key: &str, value: String, source: Layer| match out.iter_mut().find(|p| p.key == key) {
            Some(p) if source == Layer::Protocol => {
                if p.value != value && p.source == Layer::Operator {
                    p.ignored = Some(std::mem::take(&mut p.value));
                }
                p.value = value;
                p.source = source;
            }
            Some(p) if source == Layer::Operator => {
                p.value = value;
                p.source = source;
            }
            Some(_) => {}
            None => out.push(Property { key: key.to_owned(), value, source, ignored: None }),
        };
        for (k, v) in &self.extra {
            set(k, v.clone(), Layer::Operator);
        }
        for (k, v) in tuning {
            set(k, (*v).to_owned(), Layer::Tuning);
        }
        for (k, v) in protocol {
            set(k, v.clone(), Layer::Protocol);
        }
        out
    }
}

/// Which kind of client a set of properties is for: the operator's `--kafka-option`s reach
/// every client of a worker (its consumer and its dead-letter producer), so a property
/// only the other kind knows is left out rather than make librdkafka warn at every start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Consumer,
    Producer,
}

/// Whether librdkafka knows `key` only for the other kind of client than `role`.
fn foreign(role: Role, key: &str) -> bool {
    const CONSUMER: &[&str] = &[
        "group.id",
        "group.instance.id",
        "group.protocol",
        "group.remote.assignor",
        "partition.assignment.strategy",
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "max.poll.interval.ms",
        "enable.auto.commit",
        "auto.commit.interval.ms",
        "enable.auto.offset.store",
        "auto.offset.reset",
        "isolation.level",
        "check.crcs",
        "enable.partition.eof",
    ];
    const PRODUCER: &[&str] = &[
        "acks",
        "request.required.acks",
        "enable.idempotence",
        "linger.ms",
        "queue.buffering.max.ms",
        "message.timeout.ms",
        "delivery.timeout.ms",
        "retries",
        "message.send.max.retries",
        "transactional.id",
        "partitioner",
        "sticky.partitioning.linger.ms",
    ];
    match role {
        Role::Producer => {
            CONSUMER.contains(&key)
                || key.starts_with("fetch.")
                || key.starts_with("queued.")
                || key.starts_with("consume.")
        }
        Role::Consumer => {
            PRODUCER.contains(&key)
                || key.starts_with("compression.")
                || key.starts_with("batch.")
                || key.starts_with("queue.buffering.")
                || key == "compression.codec"
        }
    }
}

/// Which layer an effective property comes from (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// cdrflow's speed tuning; the operator may override it.
    Tuning,
    /// The operator's flags, config file or environment.
    Operator,
    /// Required by the exactly-once protocol; overrides the operator.
    Protocol,
}

impl Layer {
    /// `tuning`, `operator` or `protocol`.
    pub fn name(self) -> &'static str {
        match self {
            Layer::Tuning => "tuning",
            Layer::Operator => "operator",
            Layer::Protocol => "protocol",
        }
    }
}

/// One effective librdkafka property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    /// The librdkafka name.
    pub key: String,
    /// The value the client gets.
    pub value: String,
    /// Where the value comes from.
    pub source: Layer,
    /// The operator's value that the protocol overrode, if any.
    pub ignored: Option<String>,
}

/// Property keys that hold secrets: refused on command lines and in files, redacted when shown.
pub fn is_secret_property(key: &str) -> bool {
    key.contains("password") || key.contains("secret") || key.ends_with(".pem") || key == "sasl.oauthbearer.config"
}

/// If `url` holds a user or password (`http://user:pw@host`), the URL as it may be shown:
/// `scheme://…@host`. URLs appear in plans, logs and errors, so a secret must not be in
/// one, and the refusal must not repeat it.
pub fn credentials_in_url(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    (!u.username().is_empty() || u.password().is_some())
        .then(|| format!("{}://…@{}", u.scheme(), u.host_str().unwrap_or("")))
}

/// A client configuration made of these properties.
pub fn client_config(props: &[Property]) -> ClientConfig {
    let mut c = ClientConfig::new();
    for p in props {
        c.set(&p.key, &p.value);
    }
    c
}

/// Logs, once at start-up, every operator value the protocol overrode.
pub fn warn_ignored(props: &[Property]) {
    for p in props.iter().filter(|p| p.ignored.is_some()) {
        tracing::warn!(
            property = p.key,
            ignored = p.shown_ignored(),
            used = p.shown_value(),
            "a Kafka property set by the operator is overridden: the exactly-once protocol needs this value"
        );
    }
}

impl Property {
    /// The value to show: secrets redacted.
    pub fn shown_value(&self) -> &str {
        if is_secret_property(&self.key) { "<redacted>" } else { &self.value }
    }

    /// The overridden operator value to show, secrets redacted.
    pub fn shown_ignored(&self) -> Option<&str> {
        self.ignored.as_deref().map(|v| if is_secret_property(&self.key) { "<redacted>" } else { v })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_a_secret_property() {
        let s = KafkaSettings {
            brokers: "b:9092".into(),
            extra: vec![("sasl.password".into(), "hunter2".into()), ("sasl.username".into(), "cdrflow".into())],
        };
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2") && shown.contains("<redacted>") && shown.contains("cdrflow"), "{shown}");
    }

    #[test]
    fn the_operator_overrides_tuning_and_the_protocol_overrides_the_operator() {
        let s = KafkaSettings {
            brokers: "k:9092".into(),
            extra: vec![
                ("fetch.wait.max.ms".into(), "500".into()),
                ("enable.auto.commit".into(), "true".into()),
                ("client.id".into(), "x".into()),
            ],
        };
        let props = s.layered(
            &[("fetch.wait.max.ms", "100"), ("fetch.queue.backoff.ms", "50")],
            &[("enable.auto.commit", "false".into()), ("group.id", "g".into())],
        );
        let get = |k: &str| props.iter().find(|p| p.key == k).unwrap().clone();
        assert_eq!(get("fetch.wait.max.ms").value, "500");
        assert_eq!(get("fetch.wait.max.ms").source, Layer::Operator);
        assert_eq!(get("fetch.queue.backoff.ms").source, Layer::Tuning);
        let auto = get("enable.auto.commit");
        assert_eq!(
            (auto.value.as_str(), auto.source, auto.ignored.as_deref()),
            ("false", Layer::Protocol, Some("true"))
        );
        assert_eq!(get("group.id").ignored, None);
        assert_eq!(get("client.id").value, "x");
        assert_eq!(get("bootstrap.servers").value, "k:9092");
    }
}

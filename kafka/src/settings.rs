//! Connection settings shared by consumers and producers.

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
}

/// How to reach Kafka.
#[derive(Clone, Debug, Default)]
pub struct KafkaSettings {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Extra librdkafka properties passed through as given (TLS, SASL, timeouts), e.g.
    /// `security.protocol=SASL_SSL`, `sasl.mechanism=SCRAM-SHA-512`. Secrets such as
    /// `sasl.password` belong in the environment or a config file, not on a command line.
    pub extra: Vec<(String, String)>,
}

impl KafkaSettings {
    /// A librdkafka configuration with the brokers and the pass-through properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }
}

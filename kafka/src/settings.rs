//! Connection settings shared by consumers and producers.

use rdkafka::ClientConfig;

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

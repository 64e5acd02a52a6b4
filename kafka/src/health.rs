//! What librdkafka says about the brokers and the batches, turned into one clear log line,
//! metrics and readiness instead of a flood.
//!
//! librdkafka reports every failed connection attempt, to every broker, as it retries: a
//! mistyped `--brokers` used to write ~1 000 ERROR and WARN lines in 25 s without ever
//! saying what to do. Here a transport-level error (all brokers down, a refused connection,
//! a name that does not resolve, failed TLS or SASL) marks Kafka *unreachable*: it is said
//! once, naming the bootstrap address and the likely fix, then at most every
//! [`REPEAT`] while it lasts; every error is counted by kind (`cdrflow_kafka_errors_total`);
//! `/readyz` is unready until Kafka answers again (a message arrives, or no transport error
//! for [`QUIET`]). librdkafka's own log lines are rate-limited per facility.
//!
//! Errors of consumption itself (a batch that cannot be decoded, say compressed with a
//! codec this build lacks) are counted apart (`cdrflow_consume_errors_total{kind}`); a
//! partition that stops advancing while such errors recur is named by [`crate::Chores`].

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// How often a lasting problem is said again.
pub const REPEAT: Duration = Duration::from_secs(30);
/// How long without a transport error before Kafka counts as answering again.
pub const QUIET: Duration = Duration::from_secs(15);

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The brokers' health as one client (or a worker's clients together) sees it.
#[derive(Debug, Default)]
pub struct KafkaHealth {
    /// Unix ms since Kafka has been unreachable; 0 while it answers.
    down_since_ms: AtomicI64,
    /// Unix ms of the last transport-level error.
    last_down_error_ms: AtomicI64,
    /// The reason of the last transport-level error.
    last_reason: Mutex<String>,
    /// Errors by kind (`all_brokers_down`, `broker_transport_failure`, `not_implemented`, …).
    pub errors: Mutex<BTreeMap<String, u64>>,
    /// Consumption errors (a batch or message librdkafka could not hand over) by kind.
    pub consume_errors: Mutex<BTreeMap<String, u64>>,
    /// When each kind of message (error kind or log facility) was last said, Unix ms.
    said: Mutex<BTreeMap<String, i64>>,
}

/// Transport-level: the brokers cannot be reached, resolved or authenticated to.
fn is_transport(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::Resolve
            | RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::BrokerNotAvailable
    )
}

/// Consumption: a batch or message could not be handed over (not the brokers' fault).
fn is_consumption(code: RDKafkaErrorCode) -> bool {
    matches!(code, RDKafkaErrorCode::BadCompression | RDKafkaErrorCode::NotImplemented | RDKafkaErrorCode::BadMessage)
}

/// `AllBrokersDown` → `all_brokers_down`: a metric label.
pub fn kind(code: RDKafkaErrorCode) -> String {
    let name = format!("{code:?}");
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn code_of(e: &KafkaError) -> Option<RDKafkaErrorCode> {
    e.rdkafka_error_code()
}

impl KafkaHealth {
    /// Whether Kafka is unreachable now (and since when, Unix ms).
    pub fn down_since(&self) -> Option<i64> {
        match self.down_since_ms.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    /// The reason of the last transport error.
    pub fn last_reason(&self) -> String {
        self.last_reason.lock().expect("not poisoned").clone()
    }

    /// Whether `what` was said less than [`REPEAT`] ago; if not, records that it is said now.
    fn recently_said(&self, what: &str) -> bool {
        let now = now_ms();
        let mut said = self.said.lock().expect("not poisoned");
        match said.get(what) {
            Some(t) if now - t < REPEAT.as_millis() as i64 => true,
            _ => {
                said.insert(what.to_owned(), now);
                false
            }
        }
    }

    /// A global error of a client of `bootstrap` (librdkafka's error callback, or an error a
    /// consumer's `poll` returned). `role` names the client (`consumer`, `dead-letter producer`, …).
    pub fn error(&self, bootstrap: &str, role: &str, e: &KafkaError, reason: &str) {
        let Some(code) = code_of(e) else {
            if !self.recently_said(&format!("other {e}")) {
                tracing::warn!(role, error = %e, reason, "Kafka client error");
            }
            return;
        };
        let kind = kind(code);
        if is_consumption(code) {
            // Counted where `poll` hands it over ([`Self::poll_error`]); librdkafka's reason
            // here names the offset.
            if !self.recently_said(&format!("consume {kind}")) {
                tracing::warn!(
                    brokers = bootstrap,
                    error = kind,
                    reason,
                    "Kafka could not hand over a batch; the partition keeps its position, nothing is skipped (said once per {}s)",
                    REPEAT.as_secs()
                );
            }
            return;
        }
        *self.errors.lock().expect("not poisoned").entry(kind.clone()).or_default() += 1;
        if is_transport(code) {
            let now = now_ms();
            self.last_down_error_ms.store(now, Ordering::Relaxed);
            let _ = self.down_since_ms.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
            *self.last_reason.lock().expect("not poisoned") =
                if reason.is_empty() { e.to_string() } else { reason.to_owned() };
            if !self.recently_said("unreachable") {
                tracing::error!(
                    brokers = bootstrap,
                    role,
                    error = kind,
                    reason,
                    "Kafka at {bootstrap} cannot be reached: is it running, and is --brokers right (host, port, TLS/SASL settings)? Locally: deploy/local/kafka.sh start. Retrying; said again every {}s while it lasts",
                    REPEAT.as_secs()
                );
            }
            return;
        }
        if !self.recently_said(&kind) {
            tracing::warn!(
                brokers = bootstrap,
                role,
                error = kind,
                reason,
                "Kafka reported an error (said once per {}s per kind)",
                REPEAT.as_secs()
            );
        }
    }

    /// An error `poll` returned for a message: consumption errors are counted apart from
    /// transport errors.
    pub fn poll_error(&self, bootstrap: &str, e: &KafkaError) {
        match e {
            KafkaError::MessageConsumption(code) | KafkaError::MessageConsumptionFatal(code)
                if !is_transport(*code) =>
            {
                let kind = kind(*code);
                *self.consume_errors.lock().expect("not poisoned").entry(kind.clone()).or_default() += 1;
                if !self.recently_said(&format!("consume {kind}")) {
                    tracing::warn!(brokers = bootstrap, error = kind, detail = %e,
                        "Kafka could not hand over a message or batch; the partition keeps its position, nothing is skipped (said once per {}s)", REPEAT.as_secs());
                }
            }
            _ => self.error(bootstrap, "consumer", e, ""),
        }
    }

    /// Consumption errors so far, of every kind.
    pub fn consume_errors_total(&self) -> u64 {
        self.consume_errors.lock().expect("not poisoned").values().sum()
    }

    /// Consumption errors of one kind so far.
    pub fn consume_errors_of(&self, code: RDKafkaErrorCode) -> u64 {
        self.consume_errors.lock().expect("not poisoned").get(&kind(code)).copied().unwrap_or(0)
    }

    /// The last consumption error kind, if any.
    pub fn last_consume_error(&self) -> Option<String> {
        self.consume_errors.lock().expect("not poisoned").keys().next().cloned()
    }

    /// Kafka answered (a message arrived, a delivery was acknowledged): clears the
    /// unreachable state, saying so once.
    pub fn answered(&self, bootstrap: &str) {
        let since = self.down_since_ms.swap(0, Ordering::Relaxed);
        if since != 0 {
            tracing::info!(brokers = bootstrap, unreachable_s = (now_ms() - since) / 1000, "Kafka answers again");
        }
    }

    /// Clears the unreachable state when no transport error came for [`QUIET`] (a quiet
    /// topic has no message to prove it).
    pub fn refresh(&self, bootstrap: &str) {
        if self.down_since().is_some()
            && now_ms() - self.last_down_error_ms.load(Ordering::Relaxed) >= QUIET.as_millis() as i64
        {
            self.answered(bootstrap);
        }
    }

    /// A librdkafka log line: connection failures are already said by [`Self::error`], so they
    /// go to debug; other warnings and errors are said at most once per [`REPEAT`] per facility.
    pub fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let connection = matches!(fac, "FAIL" | "ERROR" | "BROKERFAIL" | "CONNECT" | "RESOLVE" | "TERMINATE")
            || message.contains("Connection refused")
            || message.contains("Disconnected")
            || message.contains("brokers are down");
        match level {
            RDKafkaLogLevel::Debug | RDKafkaLogLevel::Info | RDKafkaLogLevel::Notice => {
                tracing::debug!(target: "librdkafka", fac, "{message}")
            }
            _ if connection => tracing::debug!(target: "librdkafka", fac, "{message}"),
            RDKafkaLogLevel::Warning => {
                if !self.recently_said(&format!("log {fac}")) {
                    tracing::warn!(target: "librdkafka", fac, "{message}");
                }
            }
            _ => {
                if !self.recently_said(&format!("log {fac}")) {
                    tracing::error!(target: "librdkafka", fac, "{message}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_are_metric_labels() {
        assert_eq!(kind(RDKafkaErrorCode::AllBrokersDown), "all_brokers_down");
        assert_eq!(kind(RDKafkaErrorCode::NotImplemented), "not_implemented");
    }

    #[test]
    fn transport_errors_mark_kafka_unreachable_until_it_answers() {
        let h = KafkaHealth::default();
        assert!(h.down_since().is_none());
        h.error(
            "k:1",
            "consumer",
            &KafkaError::MessageConsumption(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        assert!(h.down_since().is_some());
        assert_eq!(h.errors.lock().unwrap()["all_brokers_down"], 1);
        h.refresh("k:1");
        assert!(h.down_since().is_some(), "still down right after an error");
        h.answered("k:1");
        assert!(h.down_since().is_none());
        h.poll_error("k:1", &KafkaError::MessageConsumption(RDKafkaErrorCode::NotImplemented));
        assert_eq!(h.consume_errors_total(), 1);
        assert!(h.down_since().is_none(), "a consumption error is not a transport error");
    }
}

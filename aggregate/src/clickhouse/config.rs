//! Where ClickHouse is and how to log in.

use anyhow::{Context, Result, bail};

/// Environment variable holding the ClickHouse password.
pub const PASSWORD_ENV: &str = "CDRFLOW_CLICKHOUSE_PASSWORD";
/// Environment variable naming a file that holds the ClickHouse password.
pub const PASSWORD_FILE_ENV: &str = "CDRFLOW_CLICKHOUSE_PASSWORD_FILE";

/// ClickHouse connection settings. The password never comes from a flag.
#[derive(Clone)]
pub struct ClickHouseConfig {
    /// HTTP interface, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    /// User name.
    pub user: String,
    /// Password (from `CDRFLOW_CLICKHOUSE_PASSWORD_FILE` or `CDRFLOW_CLICKHOUSE_PASSWORD`).
    pub password: Option<String>,
    /// Database holding cdrflow's tables.
    pub database: String,
    /// On a replicated cluster: how many replicas of a shard must hold an insert before it
    /// counts (`insert_quorum`; 0: off, as on one server). Reads then use
    /// `select_sequential_consistency`, so a replica that lacks a confirmed insert refuses
    /// to answer rather than answer stale (see [`super`]).
    pub insert_quorum: u32,
    /// How long a flush's insert may take once its rows are sent before the aggregator gives
    /// up on it (and retries, once ClickHouse no longer runs it: see [`super`]); also the
    /// longest wait for one of the aggregator's reads.
    pub insert_timeout: std::time::Duration,
}

/// The default of [`ClickHouseConfig::insert_timeout`].
pub const INSERT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl std::fmt::Debug for ClickHouseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseConfig")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .field("insert_quorum", &self.insert_quorum)
            .field("insert_timeout", &self.insert_timeout)
            .finish()
    }
}

impl ClickHouseConfig {
    /// Settings for `url` and `database`, user `default`, password from the environment.
    pub fn from_env(url: &str, database: &str) -> Result<Self> {
        // The URL is shown in plans, logs and errors: it must not carry a secret, and the
        // error must not repeat it.
        if let Some(shown) = cdrflow_kafka::settings::credentials_in_url(url) {
            bail!(
                "the ClickHouse URL ({shown}) holds a user or password: secrets never go in flags or URLs; set CDRFLOW_CLICKHOUSE_USER, and CDRFLOW_CLICKHOUSE_PASSWORD_FILE (or CDRFLOW_CLICKHOUSE_PASSWORD)"
            );
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!(
                "ClickHouse URL {url}: expected ClickHouse's HTTP interface as http://HOST:PORT or https://HOST:PORT, e.g. http://127.0.0.1:8123"
            );
        }
        if !database.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') || database.is_empty() {
            bail!("database name `{database}`: use lowercase letters, digits and _");
        }
        let password = match std::env::var_os(PASSWORD_FILE_ENV) {
            Some(path) => Some(
                std::fs::read_to_string(&path)
                    .with_context(|| format!("reading the ClickHouse password file named by {PASSWORD_FILE_ENV}"))?
                    .trim()
                    .to_owned(),
            ),
            None => std::env::var(PASSWORD_ENV).ok(),
        };
        let user = std::env::var("CDRFLOW_CLICKHOUSE_USER").unwrap_or_else(|_| "default".to_owned());
        Ok(ClickHouseConfig {
            url: url.trim_end_matches('/').to_owned(),
            user,
            password,
            database: database.to_owned(),
            insert_quorum: 0,
            insert_timeout: INSERT_TIMEOUT,
        })
    }
}

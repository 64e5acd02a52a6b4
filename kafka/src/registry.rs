//! The schema registry of an Avro feed: a client of the Confluent-compatible REST API
//! (Confluent Schema Registry, Apicurio's `/apis/ccompat/v7`, Redpanda, Karapace) that
//! fetches writer schemas by id into the decoder's [`WriterSchemas`], and registers the
//! synthetic feed's schema.
//!
//! A schema is fetched once per id and kept for the life of the worker (ids are immutable
//! in every such registry). The registry being unreachable, or not yet knowing an id, is
//! never the record's fault: the worker waits and retries with consumption paused (see
//! the driver), and nothing is dead-lettered for it.
//!
//! Credentials come from the environment (`CDRFLOW_SCHEMA_REGISTRY_USER`, and
//! `CDRFLOW_SCHEMA_REGISTRY_PASSWORD_FILE` or `CDRFLOW_SCHEMA_REGISTRY_PASSWORD`), never
//! from flags; a private CA from `CDRFLOW_SCHEMA_REGISTRY_CA_FILE` (PEM).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cdrflow_schemas::avro::{WriterSchema, WriterSchemas};
use ureq::Agent;

/// Why a schema could not be had.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No answer, or a server error: try again later.
    #[error(
        "schema registry at {url} unreachable: {detail}: is it running? (locally: bash deploy/local/registry.sh start)"
    )]
    Unreachable {
        /// The registry's base URL.
        url: String,
        /// What failed.
        detail: String,
    },
    /// The registry does not know the id (yet).
    #[error("schema registry at {url} does not know writer schema {id} (error 40403)")]
    UnknownId {
        /// The registry's base URL.
        url: String,
        /// The id asked for.
        id: u32,
    },
    /// The registry refused us (credentials, permissions): an operator must act.
    #[error(
        "schema registry at {url} refused: HTTP {status} {detail}: check CDRFLOW_SCHEMA_REGISTRY_USER and its password"
    )]
    Refused {
        /// The registry's base URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The registry's message.
        detail: String,
    },
}

/// A Confluent-compatible schema registry.
pub struct SchemaRegistry {
    /// Base URL, e.g. `http://127.0.0.1:18081/apis/ccompat/v7` (no trailing slash).
    url: String,
    /// The `Authorization` header, if credentials were given.
    authorization: Option<String>,
    /// The HTTP client.
    agent: Agent,
    /// Failed requests so far (for `/metrics`).
    pub failures: AtomicU64,
}

impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistry").field("url", &self.url).finish_non_exhaustive()
    }
}

impl SchemaRegistry {
    /// A client of the registry at `url`, with credentials and CA from the environment.
    pub fn from_env(url: &str) -> Result<SchemaRegistry> {
        let url = url.trim_end_matches('/').to_owned();
        if let Some(shown) = crate::settings::credentials_in_url(&url) {
            bail!(
                "--schema-registry ({shown}) holds a user or password: secrets never go in flags or URLs; set CDRFLOW_SCHEMA_REGISTRY_USER, and CDRFLOW_SCHEMA_REGISTRY_PASSWORD_FILE (or CDRFLOW_SCHEMA_REGISTRY_PASSWORD)"
            );
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!(
                "--schema-registry {url}: expected an http:// or https:// URL, e.g. http://127.0.0.1:18081/apis/ccompat/v7"
            );
        }
        let user = std::env::var("CDRFLOW_SCHEMA_REGISTRY_USER").ok().filter(|u| !u.is_empty());
        let password = match std::env::var_os("CDRFLOW_SCHEMA_REGISTRY_PASSWORD_FILE") {
            Some(path) => Some(
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!("reading CDRFLOW_SCHEMA_REGISTRY_PASSWORD_FILE {}", path.to_string_lossy())
                    })?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
            ),
            None => std::env::var("CDRFLOW_SCHEMA_REGISTRY_PASSWORD").ok(),
        };
        let authorization = match (user, password) {
            (Some(u), p) => {
                use base64::Engine;
                let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{}", p.unwrap_or_default()));
                Some(format!("Basic {token}"))
            }
            (None, Some(_)) => bail!("a schema registry password is set but CDRFLOW_SCHEMA_REGISTRY_USER is not"),
            (None, None) => None,
        };
        let mut config =
            Agent::config_builder().timeout_global(Some(Duration::from_secs(10))).http_status_as_error(false);
        if let Some(path) = std::env::var_os("CDRFLOW_SCHEMA_REGISTRY_CA_FILE") {
            let pem = std::fs::read(&path)
                .with_context(|| format!("reading CDRFLOW_SCHEMA_REGISTRY_CA_FILE {}", path.to_string_lossy()))?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                bail!("CDRFLOW_SCHEMA_REGISTRY_CA_FILE {}: no PEM certificate in it", path.to_string_lossy());
            }
            config = config.tls_config(
                ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(&certs)).build(),
            );
        }
        Ok(SchemaRegistry { url, authorization, agent: config.build().into(), failures: AtomicU64::new(0) })
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn unreachable(&self, detail: String) -> RegistryError {
        self.failures.fetch_add(1, Ordering::Relaxed);
        RegistryError::Unreachable { url: self.url.clone(), detail }
    }

    /// The text of writer schema `id`.
    pub fn fetch(&self, id: u32) -> Result<String, RegistryError> {
        let mut req = self.agent.get(format!("{}/schemas/ids/{id}", self.url));
        if let Some(a) = &self.authorization {
            req = req.header("Authorization", a);
        }
        let mut resp = req.call().map_err(|e| self.unreachable(e.to_string()))?;
        let status = resp.status().as_u16();
        let body =
            resp.body_mut().read_to_string().map_err(|e| self.unreachable(format!("reading the answer: {e}")))?;
        match status {
            200 => {
                #[derive(serde::Deserialize)]
                struct Answer {
                    schema: String,
                }
                serde_json::from_str::<Answer>(&body)
                    .map(|a| a.schema)
                    .map_err(|e| self.unreachable(format!("not a schema answer ({e}): {}", snippet(&body))))
            }
            404 => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                Err(RegistryError::UnknownId { url: self.url.clone(), id })
            }
            401 | 403 => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                Err(RegistryError::Refused { url: self.url.clone(), status, detail: snippet(&body) })
            }
            _ => Err(self.unreachable(format!("HTTP {status}: {}", snippet(&body)))),
        }
    }

    /// Fetches writer schema `id` into `schemas` unless it is there already.
    pub fn load(&self, id: u32, schemas: &WriterSchemas) -> Result<(), RegistryError> {
        if schemas.get(id).is_some() {
            return Ok(());
        }
        let text = self.fetch(id)?;
        let w = schemas.insert(WriterSchema::parse(id, &text));
        match &w.mismatch {
            None => tracing::info!(id, registry = %self.url, "writer schema fetched"),
            Some(why) => {
                tracing::warn!(id, registry = %self.url, why, "writer schema fetched: its records are dead-lettered as schema_mismatch")
            }
        }
        Ok(())
    }

    /// Registers `schema` (Avro, JSON text) under `subject`; returns its id.
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32> {
        let mut req = self
            .agent
            .post(format!("{}/subjects/{subject}/versions", self.url))
            .header("Content-Type", "application/vnd.schemaregistry.v1+json");
        if let Some(a) = &self.authorization {
            req = req.header("Authorization", a);
        }
        let mut resp = req
            .send(serde_json::json!({ "schema": schema }).to_string())
            .map_err(|e| self.unreachable(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        if status != 200 {
            bail!("registering a schema under {subject} at {}: HTTP {status}: {}", self.url, snippet(&body));
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            id: u32,
        }
        let a: Answer = serde_json::from_str(&body)
            .with_context(|| format!("registering under {subject} at {}: {}", self.url, snippet(&body)))?;
        Ok(a.id)
    }
}

fn snippet(body: &str) -> String {
    body.chars().take(300).collect()
}

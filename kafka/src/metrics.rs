//! The workers' HTTP endpoint: `/metrics` (Prometheus text), `/healthz` (the process
//! answers), `/readyz` (the worker holds partitions and its sink answers:
//! [`WorkerStats::readiness`]).

use std::sync::Arc;

use crate::WorkerStats;
use anyhow::{Context, Result};

/// Serves the endpoint on `addr` from a background thread.
pub fn serve(addr: &str, stats: Arc<WorkerStats>, worker: &'static str, written_what: &'static str) -> Result<()> {
    let server = tiny_http::Server::http(addr)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("serving /metrics on {addr}: is the port free?"))?;
    tracing::info!(addr, "metrics at /metrics, health at /healthz and /readyz");
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        for req in server.incoming_requests() {
            let (status, body, kind) = match req.url() {
                "/metrics" => (200, stats.prometheus(worker, written_what), "text/plain; version=0.0.4"),
                "/healthz" => (200, "ok\n".to_owned(), "text/plain"),
                "/readyz" => match stats.readiness() {
                    Ok(()) => (200, "ready\n".to_owned(), "text/plain"),
                    Err(why) => (503, format!("not ready: {why}\n"), "text/plain"),
                },
                _ => (404, "not found: try /metrics, /healthz, /readyz\n".to_owned(), "text/plain"),
            };
            let header = tiny_http::Header::from_bytes("Content-Type", kind).expect("valid header");
            let _ = req.respond(tiny_http::Response::from_string(body).with_status_code(status).with_header(header));
        }
    })?;
    Ok(())
}

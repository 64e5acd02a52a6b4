//! `cdrflow validate`: feed onboarding. Reads a file of records (one per line), decodes
//! and validates each with the same code the workers use, and reports counts by reason.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use anyhow::{Context, Result};
use cdrflow_schemas::{CsvFeed, Decoder, Format, LineRegistry, Pseudonymiser};
use serde::Serialize;

/// The report printed on stdout.
#[derive(Debug, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ValidationReport {
    /// Records that would be archived and counted.
    pub accepted: u64,
    /// Records that would go to the dead-letter topic.
    pub rejected: u64,
    /// Rejected records by reason code.
    pub reasons: BTreeMap<String, u64>,
}

impl ValidationReport {
    /// Counts one decoded message.
    pub fn count<T>(&mut self, decoded: &Result<T, cdrflow_schemas::Rejection>) {
        match decoded {
            Ok(_) => self.accepted += 1,
            Err(rej) => {
                self.rejected += 1;
                *self.reasons.entry(rej.reason.code().to_owned()).or_default() += 1;
            }
        }
    }
}

/// Validates every line of `input`; writes each rejected line with its reason to `rejects`
/// as `reason<TAB>detail<TAB>line`. Lines are split on `\n` only and may hold any bytes.
pub fn validate(
    input: impl BufRead,
    format: Format,
    csv: CsvFeed,
    lines: std::sync::Arc<LineRegistry>,
    mut rejects: Option<&mut dyn Write>,
) -> Result<ValidationReport> {
    // Hashes are never written here: numbers are checked, not hashed.
    let decoder = Decoder::new(lines, Pseudonymiser::check_only());
    let mut report = ValidationReport::default();
    for line in input.split(b'\n') {
        let mut line = line.context("reading the input")?;
        if line.last() == Some(&b'\r') && format == Format::Json {
            line.pop();
        }
        if line.is_empty() {
            continue;
        }
        let decoded = decoder.decode(format, &csv, &line);
        report.count(&decoded);
        match decoded {
            Ok(_) => {}
            Err(rej) => {
                if let Some(w) = rejects.as_deref_mut() {
                    write!(w, "{}\t{}\t", rej.reason, rej.detail.replace(['\t', '\n'], " "))?;
                    w.write_all(&line)?;
                    w.write_all(b"\n")?;
                }
            }
        }
    }
    Ok(report)
}

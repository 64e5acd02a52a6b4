//! `cdrflow validate`: feed onboarding, the records of a file or of a Kafka topic checked
//! against the contract with the workers' own decoder.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use cdrflow_schemas::{Decoder, Format, Pseudonymiser};

use super::WireFormat;

#[derive(clap::Args)]
pub struct ValidateArgs {
    /// Wire format of the records.
    #[arg(long, value_enum)]
    format: WireFormat,
    /// For asterisk-csv: the region whose PBX wrote the file. Without it, each line's
    /// accountcode must hold the region code.
    #[arg(long)]
    region: Option<u8>,
    /// Write each rejected record here as `reason<TAB>detail<TAB>record` (from a topic:
    /// `reason<TAB>detail<TAB>partition:offset`).
    #[arg(long)]
    rejects: Option<PathBuf>,
    /// Line registry file (default: the built-in one).
    #[arg(long, env = "CDRFLOW_LINES")]
    lines: Option<PathBuf>,
    /// Read the records of a Kafka topic instead of a file: every message it holds now,
    /// without joining a group (needed for avro-confluent, whose records are binary).
    #[arg(long)]
    brokers: Option<String>,
    /// With --brokers: the topic.
    #[arg(long, env = "CDRFLOW_TOPIC", default_value = "cdrs")]
    topic: String,
    /// With --brokers: a librdkafka property KEY=VALUE (repeatable).
    #[arg(long = "kafka-option", value_name = "KEY=VALUE")]
    kafka_options: Vec<String>,
    #[command(flatten)]
    registry: super::RegistryArgs,
    /// The records, one per line ("-" for stdin).
    #[arg(default_value = "-")]
    file: PathBuf,
}

pub fn run(a: ValidateArgs) -> Result<()> {
    let lines = super::lines(a.lines.as_ref())?;
    let csv = super::csv_feed(a.region)?;
    let format: Format = a.format.into();
    if let Some(rejects) = &a.rejects
        && a.brokers.is_none()
        && a.file.as_os_str() != "-"
        && super::same_file(rejects, &a.file)
    {
        bail!(
            "--rejects {} is the file being validated: writing the rejects there would empty it first; name another file (nothing was changed)",
            rejects.display()
        );
    }
    let mut rejects = match &a.rejects {
        Some(p) => Some(BufWriter::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?)),
        None => None,
    };
    let report = match &a.brokers {
        Some(brokers) => {
            let registry = a.registry.client(format)?;
            let settings = super::kafka_settings(brokers, &a.kafka_options)?;
            // Hashes are never written here: numbers are checked, not hashed.
            let decoder = Decoder::new(lines, Pseudonymiser::check_only());
            let mut report = cdrflow_feed::ValidationReport::default();
            cdrflow_kafka::admin::read_topic(&settings, &a.topic, |p, offset, payload| {
                if let (Some(registry), Ok((id, _))) = (&registry, cdrflow_schemas::avro::frame(payload)) {
                    match registry.load(id, &decoder.avro) {
                        Ok(()) | Err(cdrflow_kafka::registry::RegistryError::UnknownId { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                let decoded = decoder.decode(format, &csv, payload);
                report.count(&decoded);
                if let (Err(rej), Some(w)) = (&decoded, rejects.as_mut()) {
                    writeln!(w, "{}\t{}\t{p}:{offset}", rej.reason, rej.detail.replace(['\t', '\n'], " "))?;
                }
                Ok(())
            })?;
            report
        }
        None => {
            if format == Format::AvroConfluent {
                bail!("avro-confluent records are binary and read from Kafka: give --brokers and --topic");
            }
            let input: Box<dyn BufRead> = if a.file.as_os_str() == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                Box::new(std::io::BufReader::with_capacity(
                    1 << 20,
                    std::fs::File::open(&a.file).with_context(|| format!("opening {}", a.file.display()))?,
                ))
            };
            cdrflow_feed::validate(input, format, csv, lines, rejects.as_mut().map(|w| w as &mut dyn Write))?
        }
    };
    if let Some(w) = rejects.as_mut() {
        w.flush()?;
    }
    println!("{}", serde_json::to_string(&report)?);
    if report.accepted + report.rejected == 0 {
        let source = match &a.brokers {
            Some(brokers) => format!("topic {} on {brokers}", a.topic),
            None if a.file.as_os_str() == "-" => "standard input".to_owned(),
            None => a.file.display().to_string(),
        };
        bail!("no records in {source}: nothing was validated; check the file or topic");
    }
    Ok(())
}

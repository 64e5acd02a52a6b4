//! `cdrflow validate`: feed onboarding, a file of records checked against the contract.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};

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
    /// Write each rejected line here as `reason<TAB>detail<TAB>line`.
    #[arg(long)]
    rejects: Option<PathBuf>,
    /// Line registry file (default: the built-in one).
    #[arg(long, env = "CDRFLOW_LINES")]
    lines: Option<PathBuf>,
    /// The records, one per line ("-" for stdin).
    #[arg(default_value = "-")]
    file: PathBuf,
}

pub fn run(a: ValidateArgs) -> Result<()> {
    let lines = super::lines(a.lines.as_ref())?;
    let csv = super::csv_feed(a.region)?;
    let input: Box<dyn BufRead> = if a.file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::with_capacity(
            1 << 20,
            std::fs::File::open(&a.file).with_context(|| format!("opening {}", a.file.display()))?,
        ))
    };
    let mut rejects = match &a.rejects {
        Some(p) => Some(BufWriter::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?)),
        None => None,
    };
    let report =
        cdrflow_feed::validate(input, a.format.into(), csv, lines, rejects.as_mut().map(|w| w as &mut dyn Write))?;
    if let Some(w) = rejects.as_mut() {
        w.flush()?;
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

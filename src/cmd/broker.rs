//! `cdrflow broker`: librdkafka's mock cluster, for the demo on a machine without Java and
//! for the fault injections only it offers ([`cdrflow::broker`]).

use std::path::PathBuf;

use anyhow::Result;

#[derive(clap::Args)]
pub struct BrokerArgs {
    /// Number of brokers.
    #[arg(long, default_value_t = 3)]
    brokers: i32,
    /// Topic to create (repeatable).
    #[arg(long = "topic", default_value = "cdrs")]
    topics: Vec<String>,
    /// Partitions per topic.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Also write the bootstrap address to this file.
    #[arg(long)]
    address_file: Option<PathBuf>,
    /// Read fault-injection commands from stdin (tests): down ID | up ID | rtt ID MS | errors API CODE N.
    #[arg(long)]
    control: bool,
}

pub fn run(a: BrokerArgs) -> Result<()> {
    cdrflow::broker::run(cdrflow::broker::BrokerOptions {
        brokers: a.brokers,
        topics: a.topics,
        partitions: a.partitions,
        address_file: a.address_file,
        control: a.control,
    })
}

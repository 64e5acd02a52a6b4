//! `cdrflow broker`: librdkafka's mock cluster, for the demo on a machine without Java
//! ([`cdrflow_kafka::mock`]).

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
}

pub fn run(a: BrokerArgs) -> Result<()> {
    cdrflow_kafka::mock::run(
        cdrflow_kafka::mock::BrokerOptions {
            brokers: a.brokers,
            topics: a.topics,
            partitions: a.partitions,
            address_file: a.address_file,
        },
        cdrflow::signals::stop_flag()?,
    )
}

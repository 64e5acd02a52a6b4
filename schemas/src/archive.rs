//! The Arrow schema of the Parquet archive: one row per valid CDR, plus its lineage
//! (the Kafka partition and offset it came from).

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, TimeUnit};

/// Key-value metadata key holding [`crate::SCHEMA_VERSION`].
pub const META_SCHEMA_VERSION: &str = "cdrflow.schema_version";

/// The archive's Arrow schema (column names are the JSON wire names where they exist).
pub fn arrow_schema() -> Arc<Schema> {
    let ts = || DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("call_id", DataType::Utf8, false),
        Field::new("linked_id", DataType::Utf8, true),
        // Int32, as Hive-partition readers (pyarrow, DuckDB, Spark) infer `region=NN`; the
        // value is constant within a file, so the wider type costs nothing once encoded.
        Field::new("region", DataType::Int32, false),
        Field::new("line", DataType::Utf8, false),
        Field::new("dialled", DataType::Utf8, false),
        Field::new("caller_hash", DataType::FixedSizeBinary(16), true),
        Field::new("start", ts(), false),
        Field::new("answer", ts(), true),
        Field::new("end", ts(), false),
        Field::new("queue_wait_ms", DataType::UInt32, false),
        Field::new("talk_ms", DataType::UInt32, false),
        Field::new("disposition", DataType::Utf8, false),
        Field::new("transfer_to", DataType::Utf8, true),
        Field::new("topic", DataType::Utf8, true),
        Field::new("age_band", DataType::Utf8, true),
        Field::new("channel", DataType::Utf8, false),
        Field::new("operator_id", DataType::Utf8, true),
        Field::new("queue_id", DataType::Utf8, true),
        Field::new("kafka_partition", DataType::Int32, false),
        Field::new("kafka_offset", DataType::Int64, false),
    ]))
}

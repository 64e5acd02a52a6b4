//! Any bytes through the Avro decoder (Confluent framing, resolution from a writer schema
//! to the contract's reader schema, validation and pseudonymisation), with the writer
//! schemas of ids 1 (the contract's `cdr_v1.avsc`) and 2 (an evolution: `fuzz/avro_v2.avsc`)
//! known: a CDR or a rejection, never a panic.
#![no_main]

use std::sync::LazyLock;

use cdrflow_schemas::avro::{CDR_V1_AVSC, WriterSchema};
use cdrflow_schemas::{Decoder, LineRegistry, Pseudonymiser};
use libfuzzer_sys::fuzz_target;

static DECODER: LazyLock<Decoder> = LazyLock::new(|| {
    let d = Decoder::new(LineRegistry::builtin(), Pseudonymiser::new(b"fuzzing key, 32 bytes long......").unwrap());
    d.avro.insert(WriterSchema::parse(1, CDR_V1_AVSC));
    d.avro.insert(WriterSchema::parse(2, include_str!("../avro_v2.avsc")));
    d
});

fuzz_target!(|data: &[u8]| {
    match DECODER.decode_avro_confluent(data) {
        Ok(cdr) => assert!(cdr.end_ms >= cdr.start_ms, "an accepted call ends after it starts"),
        Err(rejection) => assert!(!rejection.reason.code().is_empty()),
    }
});

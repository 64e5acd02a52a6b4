//! Any bytes through the JSON decoder, validation and pseudonymisation: it must return a
//! CDR or a rejection with a reason, never panic, and an accepted CDR must keep the contract's
//! invariants.
#![no_main]

use std::sync::LazyLock;

use cdrflow_schemas::{Decoder, LineRegistry, Pseudonymiser};
use libfuzzer_sys::fuzz_target;

static DECODER: LazyLock<Decoder> =
    LazyLock::new(|| Decoder::new(LineRegistry::builtin(), Pseudonymiser::new(b"fuzzing key, 32 bytes long......").unwrap()));

fuzz_target!(|data: &[u8]| {
    match DECODER.decode_json(data) {
        Ok(cdr) => {
            assert!(cdr.end_ms >= cdr.start_ms, "an accepted call ends after it starts");
            assert!(!cdr.call_id.is_empty());
        }
        Err(rejection) => assert!(!rejection.reason.code().is_empty()),
    }
});

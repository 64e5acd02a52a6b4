//! Any bytes through the Asterisk CSV decoder (regions from the accountcode and from a
//! fixed feed region), validation and pseudonymisation: a CDR or a rejection, never a panic.
#![no_main]

use std::sync::LazyLock;

use cdrflow_schemas::{CsvFeed, Decoder, LineRegistry, Pseudonymiser, Regions};
use libfuzzer_sys::fuzz_target;

static DECODER: LazyLock<Decoder> =
    LazyLock::new(|| Decoder::new(LineRegistry::builtin(), Pseudonymiser::new(b"fuzzing key, 32 bytes long......").unwrap()));

fuzz_target!(|data: &[u8]| {
    let irkutsk = CsvFeed::Region(Regions::get().by_code(38).unwrap().code);
    for feed in [CsvFeed::FromAccountcode, irkutsk] {
        match DECODER.decode_asterisk_csv(data, &feed) {
            Ok(cdr) => assert!(cdr.end_ms >= cdr.start_ms, "an accepted call ends after it starts"),
            Err(rejection) => assert!(!rejection.reason.code().is_empty()),
        }
    }
});

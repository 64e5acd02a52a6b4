//! The hot-path benches' inputs, shared by the criterion benches (`benches/hot_path.rs`) and
//! the instruction counts (`examples/steps.rs`), so both measure the same records.

use cdrflow_feed::{AvroWriter, FeedOptions, Generator, Message};
use cdrflow_schemas::avro;
use cdrflow_schemas::{Cdr, Decoder, Format, LineRegistry, Pseudonymiser};

/// Records per input.
pub const N: usize = 20_000;

/// The Avro feed's writer schema: the contract's, as registry id 1.
pub fn avro_writer() -> AvroWriter {
    AvroWriter { id: 1, schema: avro::Schema::parse_str(avro::CDR_V1_AVSC).expect("the contract's schema parses") }
}

/// [`N`] messages of the synthetic national feed in `format` (seed 3, none bad).
pub fn feed(format: Format) -> Vec<Vec<u8>> {
    let opts = FeedOptions {
        cdrs: N as u64,
        seed: 3,
        format,
        bad_share: 0.0,
        avro: Some(avro_writer()),
        ..FeedOptions::default()
    };
    let mut g = Generator::new(opts);
    let mut out = Vec::with_capacity(N);
    while g
        .emit_next(&mut |m: Message<'_>| {
            out.push(m.payload.to_vec());
            Ok(())
        })
        .expect("the generator writes to memory")
    {}
    out
}

/// The ingest worker's decoder: the built-in lines, a fixed caller key, the Avro writer
/// schema known.
pub fn decoder() -> Decoder {
    let d = Decoder::new(
        LineRegistry::builtin(),
        Pseudonymiser::new(b"bench key, 32 bytes long........").expect("a 32-byte key"),
    );
    d.avro.insert(avro::WriterSchema::parse(1, avro::CDR_V1_AVSC));
    d
}

/// The JSON feed's records, decoded.
pub fn cdrs() -> Vec<Cdr> {
    let d = decoder();
    feed(Format::Json).iter().filter_map(|m| d.decode_json(m).ok()).collect()
}

//! Arbitrary bytes through what the materializer does with a record: decode and validate the
//! CloudEvent (JSON Schema, upcasting), map it to quads and documents, check the SHACL shapes.
//! Nothing may panic; every rejection must carry a reason code.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match coalition_events::decode(data) {
        Ok(event) => {
            let position =
                coalition_mapping::LogPosition { topic: event.kind.topic().to_owned(), partition: 0, offset: 0 };
            match coalition_mapping::map_event(&event, &position) {
                Ok(mapped) => assert!(!mapped.provenance.is_empty()),
                Err(e) => assert!(!e.code().is_empty()),
            }
            // What was accepted re-encodes to something accepted again.
            assert!(coalition_events::decode(&event.to_bytes()).is_ok());
        }
        Err(e) => assert!(!e.code().is_empty()),
    }
});

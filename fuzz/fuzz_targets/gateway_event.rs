//! Fuzz target: the SCF event parser never panics and every rejection becomes a valid reply.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wafer_scf::envelope::Envelope;
use wafer_scf::scf::event::{parse, reply, Parsed};

fuzz_target!(|data: &[u8]| {
    if let Parsed::Reject { origin, status, error } = parse(data, "fuzz") {
        let _ = reply(&origin, status, &Envelope::error(&error));
    }
});

//! Fuzz target: the envelope parser and the interface parser never panic, and every error has a known code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wafer_scf::envelope::{parse_request, Envelope, Para};
use wafer_scf::handlers::Interface;

fuzz_target!(|data: &[u8]| {
    match parse_request(data) {
        Ok(req) => {
            if let Ok(iface) = Interface::parse(&req.interface_name, Para(&req.para)) {
                let _ = iface.access();
            }
        }
        Err(e) => {
            let _ = Envelope::error(&e).to_bytes();
        }
    }
});

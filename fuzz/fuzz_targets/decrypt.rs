//! Fuzz target: the mini-program data decryptor never panics, whatever key, iv and ciphertext it gets.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (key, iv, ct) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let _ = wafer_scf::crypto::wxdata::decrypt(key, ct, iv, "wx1");
    let _ = wafer_scf::crypto::wxdata::decrypt("tiihtNczf5v6AKRyjwEUhQ==", &text, "r7BXXKkLb8qrSNn05n0qiA==", "wx1");
});

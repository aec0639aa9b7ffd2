//! Cryptographic primitives the service owns: CSPRNG identifiers, skey hashing, constant-time comparison,
//! the mini-program data decryptor, and upstream signature schemes.

pub mod cos;
pub mod pki;
mod secret;
pub use secret::{Secret, SecretStr};
pub mod wxdata;

use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// `n` bytes from the operating system's CSPRNG, hex-encoded (2n characters).
pub fn random_hex(n: usize) -> Result<String, getrandom::Error> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf)?;
    Ok(hex::encode(buf))
}

/// A random alphanumeric string of `len` characters from the CSPRNG (JS-SDK nonces and the like).
pub fn random_alnum(len: usize) -> Result<String, getrandom::Error> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut buf = vec![0u8; len];
    getrandom::fill(&mut buf)?;
    // 256 % 62 leaves a tiny bias; rejection sampling removes it.
    let mut out = String::with_capacity(len);
    let mut extra = [0u8; 1];
    for mut b in buf {
        while b >= 248 {
            getrandom::fill(&mut extra)?;
            b = extra[0];
        }
        out.push(ALPHABET[(b % 62) as usize] as char);
    }
    Ok(out)
}

/// Hex SHA-256. Used to store skeys (and caller keys) so that a database dump does not yield live sessions.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Hex SHA-1 (JS-SDK signatures, rawData signatures).
pub fn sha1_hex(data: &[u8]) -> String {
    hex::encode(Sha1::digest(data))
}

/// Constant-time equality of two byte strings (length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// The JS-SDK signature (`docs/upstream.md`): sha1 over `jsapi_ticket=T&noncestr=N&timestamp=TS&url=U`, values raw,
/// the URL without its `#fragment`.
pub fn jsapi_signature(ticket: &str, noncestr: &str, timestamp: u64, url: &str) -> String {
    let url = url.split('#').next().unwrap_or(url);
    sha1_hex(format!("jsapi_ticket={ticket}&noncestr={noncestr}&timestamp={timestamp}&url={url}").as_bytes())
}

/// The login-state signature of `checksession` / `resetusersessionkey`: hex HMAC-SHA256 keyed with the session key's
/// base64 text as it is (not decoded), over `body` (empty for those two).
pub fn login_signature(session_key: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(session_key.as_bytes()) else {
        return String::new(); // HMAC takes keys of any length: unreachable
    };
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_signature_matches_the_vector() {
        assert_eq!(
            login_signature("o0q0otL8aEzpcZL/FT9WsQ==", br#"{"foo":"bar"}"#),
            "654571f79995b2ce1e149e53c0a33dc39c0a74090db514261454e8dbe432aa0b"
        );
    }

    const TICKET: &str =
        "sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg";

    #[test]
    fn jsapi_signature_matches_the_official_vectors() {
        assert_eq!(
            jsapi_signature(TICKET, "Wm3WZYTPz0wzccnW", 1414587457, "http://mp.weixin.qq.com?params=value"),
            "0f9de62fce790f9a083d5c99e95740ceb90c27ed"
        );
        assert_eq!(
            jsapi_signature(TICKET, "Wm3WZYTPz0wzccnW", 1414587457, "http://mp.weixin.qq.com"),
            "f4d90daf4b3bca3078ab155816175ba34c443a7b"
        );
        assert_eq!(
            jsapi_signature(TICKET, "Wm3WZYTPz0wzccnW", 1414587457, "http://mp.weixin.qq.com#frag"),
            "f4d90daf4b3bca3078ab155816175ba34c443a7b",
            "the fragment is not signed"
        );
    }

    #[test]
    fn random_hex_has_the_asked_length_and_differs() {
        let a = random_hex(16).unwrap();
        let b = random_hex(16).unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn random_alnum_is_alphanumeric() {
        let s = random_alnum(16).unwrap();
        assert_eq!(s.len(), 16);
        assert!(s.bytes().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn ct_eq_compares_content_and_length() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
    }
}

//! Public-key and AEAD primitives for WeChat's API security: RSA private keys from PEM (PKCS#1 as the console
//! downloads them, or PKCS#8), platform certificates from PEM (only what is needed: the RSA public key and the
//! expiry, read from the DER by hand — the certificate is a trust anchor the operator registers, no chain is
//! built), RSASSA-PSS-SHA256 signing and verification (salt 32, via `ring`), and AES-256-GCM with AAD.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use ring::signature::{self, RsaKeyPair, UnparsedPublicKey};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// An RSA private key able to sign (2048 bits or more).
pub struct RsaSigner(RsaKeyPair);

impl std::fmt::Debug for RsaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RsaSigner(<redacted>)")
    }
}

impl RsaSigner {
    /// A key from PEM: `BEGIN RSA PRIVATE KEY` (PKCS#1) or `BEGIN PRIVATE KEY` (PKCS#8). The error never quotes
    /// the input.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let key = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| {
            "not a PEM private key (expected BEGIN RSA PRIVATE KEY or BEGIN PRIVATE KEY)".to_owned()
        })?;
        let pair = match &key {
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            _ => return Err("not an RSA private key".into()),
        };
        pair.map(Self).map_err(|e| format!("not a usable RSA private key ({e})"))
    }

    /// RSASSA-PSS with SHA-256, MGF1-SHA-256, salt 32 (randomised: verify to test).
    pub fn sign_pss(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let mut sig = vec![0u8; self.0.public().modulus_len()];
        self.0
            .sign(&signature::RSA_PSS_SHA256, &ring::rand::SystemRandom::new(), message, &mut sig)
            .map_err(|_| "RSA signing failed".to_owned())?;
        Ok(sig)
    }

    /// The public half, as a DER `RSAPublicKey`.
    pub fn public_key(&self) -> RsaPublic {
        RsaPublic(self.0.public().as_ref().to_vec())
    }
}

/// An RSA public key (DER `RSAPublicKey`).
#[derive(Clone, PartialEq, Eq)]
pub struct RsaPublic(Vec<u8>);

impl RsaPublic {
    /// Whether `sig` is an RSASSA-PSS-SHA256 signature (salt 32) of `message` by this key.
    pub fn verify_pss(&self, message: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&signature::RSA_PSS_2048_8192_SHA256, &self.0).verify(message, sig).is_ok()
    }
}

/// What a platform certificate is used for: its RSA public key, and when it expires (Unix seconds).
#[derive(Clone)]
pub struct Certificate {
    pub public_key: RsaPublic,
    pub not_after: i64,
}

impl Certificate {
    /// One X.509 certificate in PEM. The error never quotes the input.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let der = CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|_| "not a PEM certificate (expected BEGIN CERTIFICATE)".to_owned())?;
        Self::from_der(der.as_ref())
            .ok_or_else(|| "not an X.509 certificate with an RSA public key".to_owned())
    }

    /// Certificate → tbsCertificate → (version, serial, signature, issuer) → validity, subject, SPKI.
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let (cert, _) = Der::read(der, SEQUENCE)?;
        let (tbs, _) = Der::read(cert, SEQUENCE)?;
        let mut rest = tbs;
        if rest.first() == Some(&0xa0) {
            rest = Der::skip(rest)?; // [0] version
        }
        for _ in 0..3 {
            rest = Der::skip(rest)?; // serial, signature algorithm, issuer
        }
        let (validity, rest) = Der::read(rest, SEQUENCE)?;
        let rest = Der::skip(rest)?; // subject
        let (spki, _) = Der::read(rest, SEQUENCE)?;
        let not_after = {
            let after_before = Der::skip(validity)?;
            let (tag, time, _) = Der::any(after_before)?;
            der_time(tag, time)?
        };
        let (algorithm, rest) = Der::read(spki, SEQUENCE)?;
        let (oid, _) = Der::read(algorithm, 0x06)?;
        if oid != RSA_ENCRYPTION {
            return None;
        }
        let (bits, _) = Der::read(rest, 0x03)?;
        let (&unused, key) = bits.split_first()?;
        (unused == 0 && !key.is_empty()).then(|| Self { public_key: RsaPublic(key.to_vec()), not_after })
    }
}

const SEQUENCE: u8 = 0x30;
/// 1.2.840.113549.1.1.1
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// A minimal DER reader: single-byte tags, definite lengths of up to 4 bytes, every length checked.
struct Der;

impl Der {
    /// The next element: its tag, its content, what follows it.
    fn any(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (first as usize, rest)
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
            (len, &rest[n..])
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }

    /// The next element, which must have `tag`: its content and what follows.
    fn read(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (t, content, rest) = Self::any(input)?;
        (t == tag).then_some((content, rest))
    }

    /// What follows the next element.
    fn skip(input: &[u8]) -> Option<&[u8]> {
        Self::any(input).map(|(_, _, rest)| rest)
    }
}

/// UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as Unix seconds.
fn der_time(tag: u8, s: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(s).ok()?;
    let (year, rest) = match (tag, s.len()) {
        (0x17, 13) => {
            let yy: i64 = s.get(..2)?.parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, s.get(2..)?)
        }
        (0x18, 15) => (s.get(..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    if !rest.ends_with('Z') || !rest[..10].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |i: usize| rest[i..i + 2].parse::<i64>().ok();
    let (month, day, h, m, sec) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// AES-256-GCM: the ciphertext and the 16-byte tag, separately.
pub fn gcm_seal(
    key: &[u8; 32],
    iv: &[u8; 12],
    aad: &[u8],
    plain: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), String> {
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| "bad key length".to_owned())?;
    let mut out = cipher
        .encrypt(Nonce::from_slice(iv), Payload { msg: plain, aad })
        .map_err(|_| "encryption failed".to_owned())?;
    let tag = out.split_off(out.len() - 16);
    Ok((out, tag))
}

/// AES-256-GCM decryption; `None` unless the tag verifies.
pub fn gcm_open(key: &[u8; 32], iv: &[u8], aad: &[u8], data: &[u8], tag: &[u8]) -> Option<Vec<u8>> {
    if iv.len() != 12 || tag.len() != 16 {
        return None;
    }
    let cipher = Aes256Gcm::new_from_slice(key).ok()?;
    let mut msg = Vec::with_capacity(data.len() + 16);
    msg.extend_from_slice(data);
    msg.extend_from_slice(tag);
    cipher.decrypt(Nonce::from_slice(iv), Payload { msg: &msg, aad }).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_der_lengths() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(der_time(0x17, b"270904083922Z"), Some(1_820_047_162));
        assert_eq!(der_time(0x18, b"20270904083922Z"), Some(1_820_047_162));
        assert_eq!(der_time(0x17, b"271304083922Z"), None);
        assert_eq!(der_time(0x17, b"2709040839ZZZ"), None);
        assert!(Der::any(&[0x30, 0x82, 0x01]).is_none(), "a length past the input");
        assert!(Der::any(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_none(), "a length of 5 bytes");
        assert!(Certificate::from_der(&[0x30, 0x03, 0x30, 0x01, 0x00]).is_none());
    }

    #[test]
    fn gcm_round_trip_and_tamper() {
        let key = [7u8; 32];
        let iv = [1u8; 12];
        let (data, tag) = gcm_seal(&key, &iv, b"aad", b"hello").unwrap();
        assert_eq!(gcm_open(&key, &iv, b"aad", &data, &tag).unwrap(), b"hello");
        assert!(gcm_open(&key, &iv, b"other", &data, &tag).is_none());
        let mut bad = tag.clone();
        bad[0] ^= 1;
        assert!(gcm_open(&key, &iv, b"aad", &data, &bad).is_none());
    }
}

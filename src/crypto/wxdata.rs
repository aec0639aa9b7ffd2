//! Decryption of mini-program `encryptedData` (AES-128-CBC, PKCS#7) and the watermark check
//! (`docs/upstream.md`).

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
use base64::{engine::general_purpose::STANDARD, Engine};
use serde_json::Value;

type Aes128CbcDec = cbc::Decryptor<aes::Aes128>;

/// Why a payload could not be decrypted. The variants are for logs; callers see one DECRYPT_ERR.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecryptError {
    #[error("session_key is not base64 of 16 bytes")]
    BadKey,
    #[error("iv is not base64 of 16 bytes")]
    BadIv,
    #[error("encrypted data is not base64 of whole AES blocks")]
    BadCiphertext,
    #[error("padding check failed (wrong key or iv)")]
    BadPadding,
    #[error("plaintext is not a JSON object")]
    NotJson,
    #[error("watermark is missing")]
    NoWatermark,
    #[error("watermark appid does not match the session's app")]
    WrongAppid,
}

/// Decrypt `encrypted_data` with the session's `session_key` and `iv` (all base64), and check that the
/// watermark names `appid`. Returns the decrypted JSON object, watermark included.
pub fn decrypt(
    session_key: &str,
    encrypted_data: &str,
    iv: &str,
    appid: &str,
) -> Result<Value, DecryptError> {
    let key = decode_16(session_key).ok_or(DecryptError::BadKey)?;
    let iv = decode_16(iv).ok_or(DecryptError::BadIv)?;
    let mut data = STANDARD.decode(encrypted_data.trim()).map_err(|_| DecryptError::BadCiphertext)?;
    if data.is_empty() || data.len() % 16 != 0 {
        return Err(DecryptError::BadCiphertext);
    }
    let plain = Aes128CbcDec::new(&key.into(), &iv.into())
        .decrypt_padded_mut::<Pkcs7>(&mut data)
        .map_err(|_| DecryptError::BadPadding)?;
    let value: Value = serde_json::from_slice(plain).map_err(|_| DecryptError::NotJson)?;
    if !value.is_object() {
        return Err(DecryptError::NotJson);
    }
    let mark = value
        .get("watermark")
        .and_then(|w| w.get("appid"))
        .and_then(Value::as_str)
        .ok_or(DecryptError::NoWatermark)?;
    if mark != appid {
        return Err(DecryptError::WrongAppid);
    }
    Ok(value)
}

fn decode_16(b64: &str) -> Option<[u8; 16]> {
    let bytes = STANDARD.decode(b64.trim()).ok()?;
    bytes.try_into().ok()
}

/// Encrypt a plaintext the way WeChat does (unit tests; the integration tests have their own in `tests/it`).
#[cfg(test)]
fn encrypt_for_tests(session_key: &str, iv: &str, plaintext: &[u8]) -> Option<String> {
    use aes::cipher::BlockEncryptMut;
    type Enc = cbc::Encryptor<aes::Aes128>;
    let key = decode_16(session_key)?;
    let iv = decode_16(iv)?;
    let ct = Enc::new(&key.into(), &iv.into()).encrypt_padded_vec_mut::<Pkcs7>(plaintext);
    Some(STANDARD.encode(ct))
}

#[cfg(test)]
mod tests {
    use super::*;

    const APPID: &str = "wx4f4bc4dec97d474b";
    const KEY: &str = "tiihtNczf5v6AKRyjwEUhQ==";
    const IV: &str = "r7BXXKkLb8qrSNn05n0qiA==";
    const DATA: &str = "CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDcvSnxIMXFufNstNGTyaGS9uT5geRa0W4oTOb1WT7fJlAC+oNPdbB+3hVbJSRgv+4lGOETKUQz6OYStslQ142dNCuabNPGBzlooOmB231qMM85d2/fV6ChevvXvQP8Hkue1poOFtnEtpyxVLW1zAo6/1Xx1COxFvrc2d7UL/lmHInNlxuacJXwu0fjpXfz/YqYzBIBzD6WUfTIF9GRHpOn/Hz7saL8xz+W//FRAUid1OksQaQx4CMs8LOddcQhULW4ucetDf96JcR3g0gfRK4PC7E/r7Z6xNrXd2UIeorGj5Ef7b1pJAYB6Y5anaHqZ9J6nKEBvB4DnNLIVWSgARns/8wR2SiRS7MNACwTyrGvt9ts8p12PKFdlqYTopNHR1Vf7XjfhQlVsAJdNiKdYmYVoKlaRv85IfVunYzO0IKXsyl7JCUjCpoG20f0a04COwfneQAGGwd5oa+T8yO5hzuyDb/XcxxmK01EpqOyuxINew==";

    #[test]
    fn official_vector_decrypts() {
        let v = decrypt(KEY, DATA, IV, APPID).unwrap();
        assert_eq!(v["openId"], "oGZUI0egBJY1zhBYw2KhdUfwVJJE");
        assert_eq!(v["unionId"], "ocMvos6NjeKLIBqg5Mr9QjxrP1FA");
        assert_eq!(v["watermark"]["timestamp"], 1477314187);
        let text = serde_json::to_string(&v).unwrap();
        assert!(text.starts_with(r#"{"openId":"oGZUI0egBJY1zhBYw2KhdUfwVJJE","nickName":"Band""#));
    }

    #[test]
    fn every_bad_input_is_an_error_not_a_panic() {
        assert_eq!(decrypt(KEY, DATA, IV, "wxother").unwrap_err(), DecryptError::WrongAppid);
        assert_eq!(decrypt("short", DATA, IV, APPID).unwrap_err(), DecryptError::BadKey);
        assert_eq!(decrypt(KEY, DATA, "!!!", APPID).unwrap_err(), DecryptError::BadIv);
        assert_eq!(decrypt(KEY, "abc", IV, APPID).unwrap_err(), DecryptError::BadCiphertext);
        assert_eq!(decrypt(KEY, "", IV, APPID).unwrap_err(), DecryptError::BadCiphertext);
        assert_eq!(
            decrypt("AAAAAAAAAAAAAAAAAAAAAA==", DATA, IV, APPID).unwrap_err(),
            DecryptError::BadPadding
        );
        let not_json = encrypt_for_tests(KEY, IV, b"hello").unwrap();
        assert_eq!(decrypt(KEY, &not_json, IV, APPID).unwrap_err(), DecryptError::NotJson);
        let no_mark = encrypt_for_tests(KEY, IV, br#"{"a":1}"#).unwrap();
        assert_eq!(decrypt(KEY, &no_mark, IV, APPID).unwrap_err(), DecryptError::NoWatermark);
    }

    #[test]
    fn emoji_round_trips() {
        let plain = format!(r#"{{"nickName":"小明😀","watermark":{{"appid":"{APPID}","timestamp":1}}}}"#);
        let ct = encrypt_for_tests(KEY, IV, plain.as_bytes()).unwrap();
        assert_eq!(decrypt(KEY, &ct, IV, APPID).unwrap()["nickName"], "小明😀");
    }
}

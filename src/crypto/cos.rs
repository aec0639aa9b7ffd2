//! Tencent COS request signatures: the legacy v4 "JSON API" scheme the seed's callers use, and today's v5
//! (`q-sign-algorithm=sha1`) scheme, both pure functions of their inputs (clock and randomness are arguments).

use base64::{engine::general_purpose::STANDARD, Engine};
use hmac::{Hmac, Mac};
use sha1::{Digest, Sha1};

type HmacSha1 = Hmac<Sha1>;

fn hmac_sha1(key: &[u8], msg: &[u8]) -> [u8; 20] {
    // HMAC accepts keys of any length, so construction cannot fail.
    let mut mac = match HmacSha1::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; 20],
    };
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// RFC 3986 percent-encoding: unreserved `A-Z a-z 0-9 - _ . ~` kept, everything else `%XX` (upper-case hex).
pub fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The v4 file id: `/<appid>/<bucket>/<path>`, percent-encoded with `/` kept.
pub fn v4_fileid(appid: &str, bucket: &str, path: &str) -> String {
    let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
    uri_encode(&format!("/{appid}/{bucket}{path}")).replace("%2F", "/")
}

/// What a v4 signature covers. `expire` = 0 for a one-time ("nonreusable") signature; `fileid` empty for a
/// reusable signature not bound to a file.
#[derive(Debug, Clone)]
pub struct V4<'a> {
    pub appid: &'a str,
    pub bucket: &'a str,
    pub secret_id: &'a str,
    pub expire: u64,
    pub now: u64,
    pub rand: u32,
    pub fileid: &'a str,
}

/// A v4 signature: base64(HMAC-SHA1(SecretKey, original) ‖ original).
pub fn v4_sign(p: &V4<'_>, secret_key: &str) -> String {
    let original = format!(
        "a={}&b={}&k={}&e={}&t={}&r={}&f={}",
        p.appid, p.bucket, p.secret_id, p.expire, p.now, p.rand, p.fileid
    );
    let mut bytes = hmac_sha1(secret_key.as_bytes(), original.as_bytes()).to_vec();
    bytes.extend_from_slice(original.as_bytes());
    STANDARD.encode(bytes)
}

/// The parts of a v5 signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V5Signature {
    pub key_time: String,
    pub header_list: String,
    pub url_param_list: String,
    pub signature: String,
    /// The full `Authorization` value.
    pub authorization: String,
}

fn canonical(pairs: &[(String, String)]) -> (String, String) {
    let mut enc: Vec<(String, String)> =
        pairs.iter().map(|(k, v)| (uri_encode(&k.to_ascii_lowercase()), uri_encode(v))).collect();
    enc.sort();
    let joined = enc.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let list = enc.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(";");
    (joined, list)
}

/// What a v5 signature covers: `method path` with query parameters and headers, valid from `start` to `end`.
#[derive(Debug, Clone)]
pub struct V5<'a> {
    pub method: &'a str,
    /// The decoded object path, starting with `/`.
    pub path: &'a str,
    pub params: &'a [(String, String)],
    pub headers: &'a [(String, String)],
    pub start: u64,
    pub end: u64,
}

/// A v5 signature.
pub fn v5_sign(secret_id: &str, secret_key: &str, r: &V5<'_>) -> V5Signature {
    let (method, path, params, headers) = (r.method, r.path, r.params, r.headers);
    let key_time = format!("{};{}", r.start, r.end);
    let sign_key = hex::encode(hmac_sha1(secret_key.as_bytes(), key_time.as_bytes()));
    let (http_params, param_list) = canonical(params);
    let (http_headers, header_list) = canonical(headers);
    let http_string = format!("{}\n{path}\n{http_params}\n{http_headers}\n", method.to_ascii_lowercase());
    let string_to_sign = format!("sha1\n{key_time}\n{}\n", hex::encode(Sha1::digest(http_string.as_bytes())));
    let signature = hex::encode(hmac_sha1(sign_key.as_bytes(), string_to_sign.as_bytes()));
    let authorization = format!(
        "q-sign-algorithm=sha1&q-ak={secret_id}&q-sign-time={key_time}&q-key-time={key_time}&q-header-list={header_list}&q-url-param-list={param_list}&q-signature={signature}"
    );
    V5Signature { key_time, header_list, url_param_list: param_list, signature, authorization }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "AKIDUfLUEUigQiXqm7CVSspKJnuaiIKtxqAv";
    const SKEY: &str = "bLcPnl88WU30VY57ipRhSePfPdOfSruK";

    fn v4(expire: u64, fileid: &str) -> V4<'_> {
        V4 {
            appid: "200001",
            bucket: "newbucket",
            secret_id: SID,
            expire,
            now: 1437995644,
            rand: 2081660421,
            fileid,
        }
    }

    #[test]
    fn v4_reusable_vector() {
        assert_eq!(
            v4_sign(&v4(1437995704, ""), SKEY),
            "wHgvVkXpcZ3d+G0rOkAJml3R5NdhPTIwMDAwMSZiPW5ld2J1Y2tldCZrPUFLSURVZkxVRVVpZ1FpWHFtN0NWU3NwS0pudWFpSUt0eHFBdiZlPTE0Mzc5OTU3MDQmdD0xNDM3OTk1NjQ0JnI9MjA4MTY2MDQyMSZmPQ=="
        );
    }

    #[test]
    fn v4_once_vector() {
        let f = v4_fileid("200001", "newbucket", "tencent_test.jpg");
        assert_eq!(f, "/200001/newbucket/tencent_test.jpg");
        assert_eq!(
            v4_sign(&v4(0, &f), SKEY),
            "rUbXBVKcp4tdZKkm5wz6//DqLIdhPTIwMDAwMSZiPW5ld2J1Y2tldCZrPUFLSURVZkxVRVVpZ1FpWHFtN0NWU3NwS0pudWFpSUt0eHFBdiZlPTAmdD0xNDM3OTk1NjQ0JnI9MjA4MTY2MDQyMSZmPS8yMDAwMDEvbmV3YnVja2V0L3RlbmNlbnRfdGVzdC5qcGc="
        );
    }

    #[test]
    fn v4_fileid_encoding() {
        assert_eq!(v4_fileid("1", "b", "/a/b c.jpg"), "/1/b/a/b%20c.jpg");
        assert_eq!(v4_fileid("1", "b", "照片/猫.png"), "/1/b/%E7%85%A7%E7%89%87/%E7%8C%AB.png");
        assert_eq!(v4_fileid("1", "b", "a+b&c=d?e#f~g_h-i.j"), "/1/b/a%2Bb%26c%3Dd%3Fe%23f~g_h-i.j");
        assert_eq!(v4_fileid("1", "b", "dir/"), "/1/b/dir/");
    }

    #[test]
    fn v5_put_vector() {
        let headers: Vec<(String, String)> = [
            ("Content-Length", "13"),
            ("Content-MD5", "mQ/fVh815F3k6TAUm8m0eg=="),
            ("Content-Type", "text/plain"),
            ("Date", "Thu, 16 May 2019 06:45:51 GMT"),
            ("Host", "examplebucket-1250000000.cos.ap-beijing.myqcloud.com"),
            ("x-cos-acl", "private"),
            ("x-cos-grant-read", "uin=\"100000000011\""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let req = V5 {
            method: "PUT",
            path: "/exampleobject(腾讯云)",
            params: &[],
            headers: &headers,
            start: 1557989151,
            end: 1557996351,
        };
        let sig = v5_sign("AKIDQjz3ltompVjBni5LitkWHFlFpwkn9U5q", "BQYIM75p8x0iWVFSIgqEKwFprpRSVHlz", &req);
        assert_eq!(
            hex::encode(hmac_sha1(b"BQYIM75p8x0iWVFSIgqEKwFprpRSVHlz", b"1557989151;1557996351")),
            "eb2519b498b02ac213cb1f3d1a3d27a3b3c9bc5f"
        );
        let (h, _) = canonical(&headers);
        assert_eq!(h, "content-length=13&content-md5=mQ%2FfVh815F3k6TAUm8m0eg%3D%3D&content-type=text%2Fplain&date=Thu%2C%2016%20May%202019%2006%3A45%3A51%20GMT&host=examplebucket-1250000000.cos.ap-beijing.myqcloud.com&x-cos-acl=private&x-cos-grant-read=uin%3D%22100000000011%22");
        let http_string = format!("put\n/exampleobject(腾讯云)\n\n{h}\n");
        assert_eq!(
            hex::encode(Sha1::digest(http_string.as_bytes())),
            "8b2751e77f43a0995d6e9eb9477f4b685cca4172"
        );
        assert_eq!(sig.signature, "3b8851a11a569213c17ba8fa7dcf2abec6935172");
        assert_eq!(
            sig.header_list,
            "content-length;content-md5;content-type;date;host;x-cos-acl;x-cos-grant-read"
        );
        assert!(sig.authorization.starts_with("q-sign-algorithm=sha1&q-ak=AKIDQjz3ltompVjBni5LitkWHFlFpwkn9U5q&q-sign-time=1557989151;1557996351&"));
    }
}

//! Tencent COS signatures: `qcloud.cos.auth.reusable` / `qcloud.cos.auth.nonreusable` (legacy v4, byte for byte
//! what the seed produced) and `qcloud.cos.auth.v5` (presigned v5 URLs with server-held keys only).
//! Bad parameters are `-1` (COS_PARA_ERR), as the seed's callers expect.

use super::{Deps, Reply};
use crate::crypto::cos::{self, V4, V5};
use crate::crypto::Secret;
use crate::envelope::{Para, ReturnCode, WaferError};
use crate::ids::CosAppId;
use serde_json::{json, Value};

/// Longest lifetime of a reusable v4 signature.
pub const MAX_V4_LIFETIME_SECS: u64 = 90 * 86_400;
/// Longest lifetime of a v5 presigned URL, and the default.
pub const MAX_V5_EXPIRES_SECS: u64 = 7 * 86_400;
pub const DEFAULT_V5_EXPIRES_SECS: u64 = 600;

fn cos_err(field: &str, why: &str) -> WaferError {
    WaferError::new(ReturnCode::CosParaErr, format!("para.{field} {why}"))
}

/// Any para error in a COS interface is reported as COS_PARA_ERR (-1).
fn as_cos(e: WaferError) -> WaferError {
    WaferError { code: ReturnCode::CosParaErr, ..e }
}

fn tencent_appid(p: Para<'_>) -> Result<CosAppId, WaferError> {
    p.id("appid").map_err(as_cos)
}

fn check_name(field: &str, v: &str, extra: &[u8]) -> Result<(), WaferError> {
    if v.bytes().all(|b| b.is_ascii_alphanumeric() || extra.contains(&b)) {
        Ok(())
    } else {
        Err(cos_err(field, "has characters COS does not allow"))
    }
}

fn file_path<'a>(p: Para<'a>, field: &str) -> Result<Option<&'a str>, WaferError> {
    let path = p.opt_str_max(field, 1024).map_err(as_cos)?;
    if path.is_some_and(|s| s.chars().any(char::is_control)) {
        return Err(cos_err(field, "must not contain control characters"));
    }
    Ok(path)
}

/// Caller-given keys, or none (then the server's keys for the APPID are used).
fn given_keys(p: Para<'_>) -> Result<Option<(String, Secret)>, WaferError> {
    let sid = p.opt_token("sid", 128).map_err(as_cos)?;
    let skey = p.opt_token("skey", 128).map_err(as_cos)?;
    match (sid, skey) {
        (Some(a), Some(b)) => Ok(Some((a.to_owned(), Secret::new(b)))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(cos_err("skey", "is missing (give both sid and skey, or neither)")),
        (None, Some(_)) => Err(cos_err("sid", "is missing (give both sid and skey, or neither)")),
    }
}

/// `qcloud.cos.auth.reusable` and `qcloud.cos.auth.nonreusable`.
#[derive(Debug)]
pub struct V4Request {
    pub appid: CosAppId,
    pub bucket: String,
    /// The caller's own (SecretId, SecretKey), when it sends them.
    pub keys: Option<(String, Secret)>,
    /// `Some(expiration)` for reusable, `None` for one-time.
    pub expiration: Option<u64>,
    pub filepath: Option<String>,
}

impl V4Request {
    pub fn parse(p: Para<'_>, reusable: bool) -> Result<Self, WaferError> {
        let appid = tencent_appid(p)?;
        let bucket = p.token("bucket", 64).map_err(as_cos)?;
        check_name("bucket", bucket, b"-")?;
        let keys = given_keys(p)?;
        let expiration = if reusable {
            Some(
                p.opt_u64("expiration")
                    .map_err(as_cos)?
                    .ok_or_else(|| cos_err("expiration", "is missing"))?,
            )
        } else {
            None
        };
        let filepath = file_path(p, "filepath")?.map(str::to_owned);
        if !reusable && filepath.is_none() {
            return Err(cos_err("filepath", "is required for a one-time signature"));
        }
        Ok(Self { appid, bucket: bucket.to_owned(), keys, expiration, filepath })
    }
}

/// `qcloud.cos.auth.v5`.
#[derive(Debug)]
pub struct V5Request {
    pub appid: CosAppId,
    pub bucket: String,
    pub region: String,
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub expires: u64,
}

fn string_map(p: Para<'_>, field: &str) -> Result<Vec<(String, String)>, WaferError> {
    match p.0.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(m)) if m.len() <= 32 => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) if !k.is_empty() && k.len() <= 128 && s.len() <= 1024 => {
                    Ok((k.clone(), s.clone()))
                }
                Value::Number(n) if !k.is_empty() && k.len() <= 128 => Ok((k.clone(), n.to_string())),
                _ => Err(cos_err(field, "values must be strings of at most 1024 bytes")),
            })
            .collect(),
        Some(_) => Err(cos_err(field, "must be an object of at most 32 string values")),
    }
}

impl V5Request {
    pub fn parse(p: Para<'_>) -> Result<Self, WaferError> {
        let appid = tencent_appid(p)?;
        let bucket = p.token("bucket", 64).map_err(as_cos)?;
        check_name("bucket", bucket, b"-")?;
        match bucket.rsplit_once('-') {
            Some((name, id))
                if !name.is_empty() && !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) =>
            {
                // The bucket belongs to an APPID: it must be the one whose keys (and whose caller-key scope) sign.
                if id != appid.as_str() {
                    return Err(cos_err("bucket", "must belong to para.appid (<name>-<appid>)"));
                }
            }
            _ => return Err(cos_err("bucket", "must be <name>-<appid>")),
        }
        let region = p.token("region", 32).map_err(as_cos)?;
        check_name("region", region, b"-")?;
        let method = p.token("method", 8).map_err(as_cos)?.to_ascii_uppercase();
        if !matches!(method.as_str(), "GET" | "PUT" | "POST" | "DELETE" | "HEAD") {
            return Err(cos_err("method", "must be GET, PUT, POST, DELETE or HEAD"));
        }
        let path = file_path(p, "path")?.ok_or_else(|| cos_err("path", "is missing"))?;
        let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
        if path.split('/').any(|seg| seg == ".." || seg == ".") {
            return Err(cos_err("path", "must not contain . or .. segments"));
        }
        let expires = p.opt_u64("expires").map_err(as_cos)?.unwrap_or(DEFAULT_V5_EXPIRES_SECS);
        if expires == 0 || expires > MAX_V5_EXPIRES_SECS {
            return Err(cos_err("expires", "must be between 1 second and 7 days"));
        }
        Ok(Self {
            appid,
            bucket: bucket.to_owned(),
            region: region.to_owned(),
            method,
            path,
            query: string_map(p, "query")?,
            headers: string_map(p, "headers")?,
            expires,
        })
    }
}

async fn server_keys(deps: &Deps, appid: &CosAppId) -> Result<(String, Secret), WaferError> {
    match deps.store.registry.get_cos_key(appid).await.map_err(WaferError::db)? {
        Some(k) => Ok((k.secret_id, Secret::new(k.secret_key))),
        None => Err(cos_err("sid", "and skey are missing and this server holds no COS keys for this appid")),
    }
}

fn random_u32() -> Result<u32, WaferError> {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b)
        .map_err(|e| WaferError::new(ReturnCode::InternalErr, "no randomness available").with_detail(e))?;
    Ok(u32::from_le_bytes(b))
}

/// A v4 signature.
pub async fn v4(deps: &Deps, req: V4Request) -> Result<Reply, WaferError> {
    let now = deps.clock.now().max(0) as u64;
    if let Some(e) = req.expiration {
        if e <= now {
            return Err(cos_err("expiration", "must be in the future (absolute Unix seconds)"));
        }
        if e > now + MAX_V4_LIFETIME_SECS {
            return Err(cos_err("expiration", "must be at most 90 days ahead"));
        }
    }
    let (sid, skey) = match req.keys {
        Some(k) => k,
        None => server_keys(deps, &req.appid).await?,
    };
    let fileid =
        req.filepath.as_deref().map(|f| cos::v4_fileid(&req.appid, &req.bucket, f)).unwrap_or_default();
    let params = V4 {
        appid: &req.appid,
        bucket: &req.bucket,
        secret_id: &sid,
        expire: req.expiration.unwrap_or(0),
        now,
        rand: random_u32()?,
        fileid: &fileid,
    };
    Ok(Reply { message: "OK", data: json!(cos::v4_sign(&params, skey.expose())).into(), app: None })
}

/// A v5 presigned request.
pub async fn v5(deps: &Deps, req: V5Request) -> Result<Reply, WaferError> {
    let (sid, skey) = server_keys(deps, &req.appid).await?;
    let now = deps.clock.now().max(0) as u64;
    // The host is derived from bucket and region, never taken from the caller.
    let host = format!("{}.cos.{}.myqcloud.com", req.bucket, req.region);
    let mut headers: Vec<(String, String)> =
        req.headers.iter().filter(|(k, _)| !k.eq_ignore_ascii_case("host")).cloned().collect();
    headers.push(("host".into(), host.clone()));
    let sig = cos::v5_sign(
        &sid,
        skey.expose(),
        &V5 {
            method: &req.method,
            path: &req.path,
            params: &req.query,
            headers: &headers,
            start: now,
            end: now + req.expires,
        },
    );
    let encoded_path = req.path.split('/').map(cos::uri_encode).collect::<Vec<_>>().join("/");
    let mut query: Vec<String> =
        req.query.iter().map(|(k, v)| format!("{}={}", cos::uri_encode(k), cos::uri_encode(v))).collect();
    query.extend(sig.authorization.split('&').map(|kv| match kv.split_once('=') {
        Some((k, v)) => format!("{k}={}", cos::uri_encode(v)),
        None => kv.to_owned(),
    }));
    let url = format!("https://{host}{encoded_path}?{}", query.join("&"));
    Ok(Reply {
        message: "OK",
        data: json!({"authorization": sig.authorization, "url": url, "expires_at": now + req.expires}).into(),
        app: None,
    })
}

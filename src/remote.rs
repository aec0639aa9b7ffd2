//! The CLI's `--server`: the admin operations sent to a deployed wafer-scf through its admin interfaces
//! (`qcloud.admin.*`), with the admin token in `X-Wafer-Admin-Token`. Plain `http://` is refused except to
//! localhost, so the token never crosses a network in the clear.

use crate::admin::ops::AdminOp;
use crate::admin::{AdminApi, AdminError, AdminResult};
use crate::envelope::{ReturnCode, WaferError};
use async_trait::async_trait;
use serde_json::Value;
use std::time::Duration;

/// A deployed server, reached over HTTPS.
pub struct Remote {
    http: reqwest::Client,
    url: String,
    admin_token: String,
}

impl Remote {
    /// `url` must be `https://…`, or `http://` to localhost / 127.0.0.1 / [::1].
    pub fn new(url: &str, admin_token: &str) -> Result<Self, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("WAFER_SERVER: not a URL ({e})"))?;
        let local = matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]" | "::1"));
        match parsed.scheme() {
            "https" => {}
            "http" if local => {}
            "http" => {
                return Err("WAFER_SERVER: plain http:// would send the admin token in the clear; use https:// (http:// only to localhost)".into())
            }
            s => return Err(format!("WAFER_SERVER: unsupported scheme {s}")),
        }
        if admin_token.trim().is_empty() {
            return Err("WAFER_ADMIN_TOKEN must be set to manage a server with --server".into());
        }
        // Never follow a redirect: it would take the admin token and secrets to whatever host it names.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .build()
            .map_err(|e| format!("could not build the HTTP client: {e}"))?;
        Ok(Self { http, url: url.to_owned(), admin_token: admin_token.to_owned() })
    }

    /// Send one operation; its reply's `returnData`, or the refusal with the server's return code.
    async fn send(&self, op: AdminOp) -> AdminResult<Value> {
        let body = crate::envelope::request_body(op.interface(), op.para());
        let resp = self
            .http
            .post(&self.url)
            .header("X-Wafer-Admin-Token", &self.admin_token)
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                AdminError::Unreachable(format!("could not reach {}: {}", self.url, e.without_url()))
            })?;
        if let Some(crate::wechat::UpstreamError::Redirect(host)) = crate::wechat::redirect_of(&resp) {
            return Err(AdminError::Unreachable(format!(
                "{} answered with a redirect to {host}; not followed (the admin token would go with it): \
                 give the final URL as --server",
                self.url
            )));
        }
        let status = resp.status();
        let env: Value = resp.json().await.map_err(|_| {
            AdminError::Unreachable(format!("{} answered HTTP {status} without a Wafer envelope", self.url))
        })?;
        match env["returnCode"].as_i64() {
            Some(0) => Ok(env["returnData"].clone()),
            Some(code) => {
                let message = env["returnMessage"].as_str().unwrap_or("error").to_owned();
                Err(match ReturnCode::from_code(code) {
                    Some(c) => AdminError::Refused(WaferError::new(c, message)),
                    None => AdminError::Unreachable(format!(
                        "{} answered return code {code}: {message}",
                        self.url
                    )),
                })
            }
            None => Err(AdminError::Unreachable(format!(
                "{} answered an envelope without a return code",
                self.url
            ))),
        }
    }
}

#[async_trait]
impl AdminApi for Remote {
    async fn run(&self, op: AdminOp) -> AdminResult<Value> {
        self.send(op).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_refused_except_to_localhost() {
        assert!(Remote::new("http://example.com/", "t").is_err());
        assert!(Remote::new("https://example.com/", "t").is_ok());
        assert!(Remote::new("http://127.0.0.1:8080/", "t").is_ok());
        assert!(Remote::new("http://localhost:8080/", "t").is_ok());
        assert!(Remote::new("https://example.com/", " ").is_err(), "needs the admin token");
    }
}

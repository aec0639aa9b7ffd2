//! The CLI's `--server`: the admin operations sent to a deployed wafer-scf through its admin interfaces
//! (`qcloud.admin.*`), with the admin token in `X-Wafer-Admin-Token`. Plain `http://` is refused except to
//! localhost, so the token never crosses a network in the clear.

use crate::admin::{
    AdminApi, AdminError, AdminResult, AgentInfo, AppInfo, ChangeInfo, CosInfo, KeyInfo, Status,
};
use crate::registry::{AgentChanges, AppChanges, KeyScope};
use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
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

    async fn call<T: DeserializeOwned>(&self, interface: &str, para: Value) -> AdminResult<T> {
        let body = json!({"version": 1, "componentName": "MA", "interface": {"interfaceName": interface, "para": para}});
        let fail = |message: String| AdminError { code: 1005, message, detail: None };
        let resp = self
            .http
            .post(&self.url)
            .header("X-Wafer-Admin-Token", &self.admin_token)
            .json(&body)
            .send()
            .await
            .map_err(|e| fail(format!("could not reach {}: {}", self.url, e.without_url())))?;
        if let Some(crate::wechat::UpstreamError::Redirect(host)) = crate::wechat::redirect_of(&resp) {
            return Err(fail(format!(
                "{} answered with a redirect to {host}; not followed (the admin token would go with it): \
                 give the final URL as --server",
                self.url
            )));
        }
        let status = resp.status();
        let env: Value = resp
            .json()
            .await
            .map_err(|_| fail(format!("{} answered HTTP {status} without a Wafer envelope", self.url)))?;
        let code = env["returnCode"].as_i64().unwrap_or(-1);
        if code != 0 {
            let message = env["returnMessage"].as_str().unwrap_or("error").to_owned();
            return Err(AdminError { code, message, detail: None });
        }
        serde_json::from_value(env["returnData"].clone())
            .map_err(|e| fail(format!("unexpected reply to {interface}: {e}")))
    }
}

#[async_trait]
impl AdminApi for Remote {
    async fn put_app(&self, appid: &str, c: AppChanges, must_exist: bool) -> AdminResult<ChangeInfo> {
        let name = if must_exist { "qcloud.admin.app.update" } else { "qcloud.admin.app.add" };
        let para = json!({
            "appid": appid, "secret": c.secret, "token_mode": c.token_mode.map(|m| m.as_str()),
            "login_duration_days": c.login_duration_secs.map(|s| s / 86_400),
            "session_duration_secs": c.session_duration_secs,
        });
        self.call(name, para).await
    }
    async fn list_apps(&self) -> AdminResult<Vec<AppInfo>> {
        self.call("qcloud.admin.app.list", json!({})).await
    }
    async fn remove_app(&self, appid: &str) -> AdminResult<()> {
        self.call::<Value>("qcloud.admin.app.remove", json!({"appid": appid})).await.map(drop)
    }
    async fn unblock_app(&self, appid: &str) -> AdminResult<()> {
        self.call::<Value>("qcloud.admin.app.unblock", json!({"appid": appid})).await.map(drop)
    }
    async fn put_agent(&self, corpid: &str, agentid: &str, c: AgentChanges) -> AdminResult<ChangeInfo> {
        let para = json!({"corpid": corpid, "agentid": agentid, "secret": c.secret, "remark": c.remark});
        self.call("qcloud.admin.agent.add", para).await
    }
    async fn list_agents(&self) -> AdminResult<Vec<AgentInfo>> {
        self.call("qcloud.admin.agent.list", json!({})).await
    }
    async fn remove_agent(&self, corpid: &str, agentid: &str) -> AdminResult<()> {
        let para = json!({"corpid": corpid, "agentid": agentid});
        self.call::<Value>("qcloud.admin.agent.remove", para).await.map(drop)
    }
    async fn put_cos(&self, appid: &str, id: Option<String>, key: Option<String>) -> AdminResult<ChangeInfo> {
        let para = json!({"appid": appid, "secret_id": id, "secret_key": key});
        self.call("qcloud.admin.cos.add", para).await
    }
    async fn list_cos(&self) -> AdminResult<Vec<CosInfo>> {
        self.call("qcloud.admin.cos.list", json!({})).await
    }
    async fn remove_cos(&self, appid: &str) -> AdminResult<()> {
        self.call::<Value>("qcloud.admin.cos.remove", json!({"appid": appid})).await.map(drop)
    }
    async fn add_key(&self, name: &str, scope: KeyScope) -> AdminResult<String> {
        let para = json!({"name": name, "apps": scope.apps, "corps": scope.corps, "all": scope.all, "apis": scope.apis});
        let reply: Value = self.call("qcloud.admin.key.add", para).await?;
        reply["key"].as_str().map(str::to_owned).ok_or(AdminError {
            code: 1005,
            message: "no key in the reply".into(),
            detail: None,
        })
    }
    async fn list_keys(&self) -> AdminResult<Vec<KeyInfo>> {
        self.call("qcloud.admin.key.list", json!({})).await
    }
    async fn revoke_key(&self, name: &str) -> AdminResult<()> {
        self.call::<Value>("qcloud.admin.key.revoke", json!({"name": name})).await.map(drop)
    }
    async fn status(&self) -> AdminResult<Status> {
        self.call("qcloud.admin.status", json!({})).await
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

//! The WeCom (WeChat Work) API client: self-built app tokens, the corp JS-SDK ticket and the agent ticket.

use super::{parse_fetched, send_json, Fetched, UpstreamError};

/// The WeCom API client (`qyapi.weixin.qq.com` by default).
#[derive(Clone, Debug)]
pub struct WeComClient {
    http: reqwest::Client,
    base: String,
}

impl WeComClient {
    pub fn new(http: reqwest::Client, base_url: &str) -> Self {
        Self { http, base: base_url.trim_end_matches('/').to_owned() }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET /cgi-bin/gettoken`: one token per (corpid, app secret).
    pub async fn gettoken(&self, corpid: &str, secret: &str) -> Result<Fetched, UpstreamError> {
        let req = self
            .http
            .get(format!("{}/cgi-bin/gettoken", self.base))
            .query(&[("corpid", corpid), ("corpsecret", secret)]);
        parse_fetched(&send_json("/cgi-bin/gettoken", req).await?, "access_token")
    }

    /// `GET /cgi-bin/get_jsapi_ticket`: the corp ticket for `wx.config`.
    pub async fn corp_ticket(&self, access_token: &str) -> Result<Fetched, UpstreamError> {
        let req = self
            .http
            .get(format!("{}/cgi-bin/get_jsapi_ticket", self.base))
            .query(&[("access_token", access_token)]);
        parse_fetched(&send_json("/cgi-bin/get_jsapi_ticket", req).await?, "ticket")
    }

    /// `GET /cgi-bin/ticket/get?type=agent_config`: the app ticket for `wx.agentConfig` (needs that app's token).
    pub async fn agent_ticket(&self, access_token: &str) -> Result<Fetched, UpstreamError> {
        let req = self
            .http
            .get(format!("{}/cgi-bin/ticket/get", self.base))
            .query(&[("access_token", access_token), ("type", "agent_config")]);
        parse_fetched(&send_json("/cgi-bin/ticket/get", req).await?, "ticket")
    }
}

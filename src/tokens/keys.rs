//! Credential keys: which token or ticket, of which app or WeCom agent, as a storage key string.

/// The kinds of managed credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredKind {
    /// Mini-program / official-account access token.
    MpToken,
    /// Official-account JS-SDK ticket.
    MpJsapiTicket,
    /// WeCom self-built app access token.
    WcToken,
    /// WeCom corp JS-SDK ticket (`wx.config`).
    WcCorpTicket,
    /// WeCom app ticket (`wx.agentConfig`).
    WcAgentTicket,
}

impl CredKind {
    pub fn is_ticket(self) -> bool {
        matches!(self, Self::MpJsapiTicket | Self::WcCorpTicket | Self::WcAgentTicket)
    }

    pub fn is_wecom(self) -> bool {
        matches!(self, Self::WcToken | Self::WcCorpTicket | Self::WcAgentTicket)
    }

    fn prefix(self) -> &'static str {
        match self {
            Self::MpToken => "mp:token",
            Self::MpJsapiTicket => "mp:jsapi_ticket",
            Self::WcToken => "wc:token",
            Self::WcCorpTicket => "wc:corp_ticket",
            Self::WcAgentTicket => "wc:agent_ticket",
        }
    }
}

/// A credential of one app (`appid`) or one WeCom agent (`corpid`, `agentid`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CredKey {
    pub kind: CredKind,
    a: String,
    b: String,
}

impl CredKey {
    pub fn app(kind: CredKind, appid: &str) -> Self {
        Self { kind, a: appid.to_owned(), b: String::new() }
    }

    pub fn agent(kind: CredKind, corpid: &str, agentid: &str) -> Self {
        Self { kind, a: corpid.to_owned(), b: agentid.to_owned() }
    }

    /// A key from its storage string (`mp:token:wx…`, `wc:token:ww…:1000002`).
    pub fn parse(s: &str) -> Option<Self> {
        let kinds = [
            CredKind::MpToken,
            CredKind::MpJsapiTicket,
            CredKind::WcToken,
            CredKind::WcCorpTicket,
            CredKind::WcAgentTicket,
        ];
        let (kind, rest) = kinds
            .iter()
            .find_map(|k| s.strip_prefix(k.prefix()).and_then(|r| r.strip_prefix(':')).map(|r| (*k, r)))?;
        if kind.is_wecom() {
            let (a, b) = rest.split_once(':')?;
            Some(Self::agent(kind, a, b))
        } else {
            Some(Self::app(kind, rest))
        }
    }

    /// The appid (or corpid).
    pub fn owner(&self) -> &str {
        &self.a
    }

    /// (corpid, agentid).
    pub fn agent_ids(&self) -> (&str, &str) {
        (&self.a, &self.b)
    }

    /// The token a ticket of this key is fetched with.
    pub fn token_key(&self) -> Self {
        let kind = if self.kind.is_wecom() { CredKind::WcToken } else { CredKind::MpToken };
        Self { kind, a: self.a.clone(), b: self.b.clone() }
    }

    /// Every key belonging to an app.
    pub fn all_for_app(appid: &str) -> Vec<String> {
        [CredKind::MpToken, CredKind::MpJsapiTicket]
            .iter()
            .map(|k| Self::app(*k, appid).to_string())
            .collect()
    }

    /// Every key belonging to a WeCom agent.
    pub fn all_for_agent(corpid: &str, agentid: &str) -> Vec<String> {
        [CredKind::WcToken, CredKind::WcCorpTicket, CredKind::WcAgentTicket]
            .iter()
            .map(|k| Self::agent(*k, corpid, agentid).to_string())
            .collect()
    }

    /// The key as storage and the caches name it (`mp:token:wx…`, `wc:token:corp:agent`): the same text as
    /// `Display`, built without the formatter (it is asked for on every credential request).
    pub fn text(&self) -> String {
        let prefix = self.kind.prefix();
        let mut out = String::with_capacity(prefix.len() + self.a.len() + self.b.len() + 2);
        out.push_str(prefix);
        out.push(':');
        out.push_str(&self.a);
        if self.kind.is_wecom() {
            out.push(':');
            out.push_str(&self.b);
        }
        out
    }
}

impl std::fmt::Display for CredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_render_and_map_to_their_token() {
        let t = CredKey::agent(CredKind::WcAgentTicket, "ww1", "1000002");
        assert_eq!(t.to_string(), "wc:agent_ticket:ww1:1000002");
        assert_eq!(t.token_key().to_string(), "wc:token:ww1:1000002");
        assert_eq!(CredKey::app(CredKind::MpJsapiTicket, "wx1").token_key().to_string(), "mp:token:wx1");
        assert_eq!(CredKey::all_for_agent("c", "a").len(), 3);
        assert_eq!(CredKey::parse("wc:agent_ticket:ww1:1000002"), Some(t));
        assert_eq!(CredKey::parse("mp:token:wx1"), Some(CredKey::app(CredKind::MpToken, "wx1")));
        assert_eq!(CredKey::parse("mp:jsapi_ticket:wx1").map(|k| k.kind), Some(CredKind::MpJsapiTicket));
        assert_eq!(CredKey::parse("wc:token:ww1"), None);
        assert_eq!(CredKey::parse("xx:token:wx1"), None);
    }
}

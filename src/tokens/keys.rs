//! Credential keys: which token or ticket, of which app or WeCom agent ([`Owner`]), as a storage key string.

use crate::ids::{AgentId, AppId, CorpId};

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

/// Whose credential it is: an app (mini-program or official account), or a WeCom agent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    App(AppId),
    Agent { corpid: CorpId, agentid: AgentId },
}

impl Owner {
    /// The owner's credential of `kind`.
    pub fn key(&self, kind: CredKind) -> CredKey {
        CredKey { kind, owner: self.clone() }
    }

    /// The owner's credential of `kind`, the owner moved into it (given back by [`CredKey::into_owner`]).
    pub fn into_key(self, kind: CredKind) -> CredKey {
        CredKey { kind, owner: self }
    }

    /// The appid, or the corpid: what a caller key's scope names.
    pub fn scope_id(&self) -> &str {
        match self {
            Self::App(a) => a.as_str(),
            Self::Agent { corpid, .. } => corpid.as_str(),
        }
    }

    /// The appid, if an app owns it.
    pub fn app(&self) -> Option<&AppId> {
        match self {
            Self::App(a) => Some(a),
            Self::Agent { .. } => None,
        }
    }

    /// (corpid, agentid), if a WeCom agent owns it.
    pub fn agent(&self) -> Option<(&CorpId, &AgentId)> {
        match self {
            Self::App(_) => None,
            Self::Agent { corpid, agentid } => Some((corpid, agentid)),
        }
    }

    /// The owner's access-token kind (every call made for it goes with this token).
    pub fn token_kind(&self) -> CredKind {
        match self {
            Self::App(_) => CredKind::MpToken,
            Self::Agent { .. } => CredKind::WcToken,
        }
    }
}

/// A credential of one owner.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CredKey {
    pub kind: CredKind,
    owner: Owner,
}

impl CredKey {
    pub fn app(kind: CredKind, appid: &AppId) -> Self {
        Self { kind, owner: Owner::App(appid.clone()) }
    }

    pub fn agent(kind: CredKind, corpid: &CorpId, agentid: &AgentId) -> Self {
        Self { kind, owner: Owner::Agent { corpid: corpid.clone(), agentid: agentid.clone() } }
    }

    /// The key's owner, moved out.
    pub fn into_owner(self) -> Owner {
        self.owner
    }

    /// A key from its storage string (`mp:token:wx…`, `wc:token:ww…:1000002`); `None` for anything else.
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
        let owner = if kind.is_wecom() {
            let (a, b) = rest.split_once(':')?;
            Owner::Agent { corpid: a.parse().ok()?, agentid: b.parse().ok()? }
        } else {
            Owner::App(rest.parse().ok()?)
        };
        Some(Self { kind, owner })
    }

    /// Whose credential it is.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    /// The token a ticket of this key is fetched with.
    pub fn token_key(&self) -> Self {
        Self { kind: self.owner.token_kind(), owner: self.owner.clone() }
    }

    /// Every key belonging to an app.
    pub fn all_for_app(appid: &AppId) -> Vec<String> {
        [CredKind::MpToken, CredKind::MpJsapiTicket].iter().map(|k| Self::app(*k, appid).text()).collect()
    }

    /// Every key belonging to a WeCom agent.
    pub fn all_for_agent(corpid: &CorpId, agentid: &AgentId) -> Vec<String> {
        [CredKind::WcToken, CredKind::WcCorpTicket, CredKind::WcAgentTicket]
            .iter()
            .map(|k| Self::agent(*k, corpid, agentid).text())
            .collect()
    }

    /// The key as storage and the caches name it (`mp:token:wx…`, `wc:token:corp:agent`): the same text as
    /// `Display`, built without the formatter (it is asked for on every credential request).
    pub fn text(&self) -> String {
        let mut out = String::new();
        self.write_text(&mut out);
        out
    }

    /// [`CredKey::text`] written into `out`, replacing what it held.
    pub fn write_text(&self, out: &mut String) {
        let prefix = self.kind.prefix();
        let (a, b) = match &self.owner {
            Owner::App(a) => (a.as_str(), None),
            Owner::Agent { corpid, agentid } => (corpid.as_str(), Some(agentid.as_str())),
        };
        out.clear();
        out.reserve(prefix.len() + a.len() + b.map_or(0, str::len) + 2);
        out.push_str(prefix);
        out.push(':');
        out.push_str(a);
        if let Some(b) = b {
            out.push(':');
            out.push_str(b);
        }
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
        let (ww1, agent, wx1) = ("ww1".parse().unwrap(), "1000002".parse().unwrap(), "wx1".parse().unwrap());
        let t = CredKey::agent(CredKind::WcAgentTicket, &ww1, &agent);
        assert_eq!(t.to_string(), "wc:agent_ticket:ww1:1000002");
        assert_eq!(t.token_key().to_string(), "wc:token:ww1:1000002");
        assert_eq!(CredKey::app(CredKind::MpJsapiTicket, &wx1).token_key().to_string(), "mp:token:wx1");
        assert_eq!(CredKey::all_for_agent(&ww1, &agent).len(), 3);
        assert_eq!(CredKey::parse("wc:agent_ticket:ww1:1000002"), Some(t));
        assert_eq!(CredKey::parse("mp:token:wx1"), Some(CredKey::app(CredKind::MpToken, &wx1)));
        assert_eq!(CredKey::parse("mp:jsapi_ticket:wx1").map(|k| k.kind), Some(CredKind::MpJsapiTicket));
        assert_eq!(CredKey::parse("wc:token:ww1"), None);
        assert_eq!(CredKey::parse("xx:token:wx1"), None);
        assert_eq!(CredKey::parse("mp:token:wx 1"), None, "only identifiers of their kind");
    }
}

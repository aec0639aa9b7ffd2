//! The admin operations as data: one serde type per operation, the same type written by the CLI's `--server`
//! client ([`crate::remote`]) and read by the server's admin interfaces ([`crate::handlers::admin`]), so the wire
//! schema exists once. [`AdminOp`] is the one table of operations: interface name, fields, whether it changes
//! anything. Secrets travel as [`Secret`], which `Debug` never shows.

use crate::crypto::Secret;
use crate::envelope::{ReturnCode, WaferError};
use crate::ids::{AgentId, AppId, CorpId, CosAppId};
use crate::registry::KeyScope;
use crate::store::TokenMode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `app.add` / `app.update`: the fields to set; `None` keeps what is there (or the default for a new app).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppPut {
    pub appid: AppId,
    #[serde(default)]
    pub secret: Option<Secret>,
    #[serde(default)]
    pub token_mode: Option<TokenMode>,
    #[serde(default)]
    pub login_duration_days: Option<i64>,
    #[serde(default)]
    pub session_duration_secs: Option<i64>,
}

/// An app named by its appid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRef {
    pub appid: AppId,
}

/// `agent.add`: a WeCom agent's fields to set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentPut {
    pub corpid: CorpId,
    pub agentid: AgentId,
    #[serde(default)]
    pub secret: Option<Secret>,
    #[serde(default)]
    pub remark: Option<String>,
}

/// `app.api_security`: register an app's keys for WeChat's API security (all fields), or switch it off (`off`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiSecurityPut {
    pub appid: AppId,
    #[serde(default)]
    pub off: bool,
    #[serde(default)]
    pub sym_key: Option<Secret>,
    #[serde(default)]
    pub sym_sn: Option<String>,
    #[serde(default)]
    pub private_key: Option<Secret>,
    #[serde(default)]
    pub private_key_sn: Option<String>,
    #[serde(default)]
    pub certs: Vec<crate::apisec::CertInput>,
}

/// `app.quota`: an API's daily quota for an app, as WeChat counts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaGet {
    pub appid: AppId,
    /// The API path, e.g. `/wxa/getwxacodeunlimit`.
    pub api: String,
}

/// A WeCom agent named by corpid and agentid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRef {
    pub corpid: CorpId,
    pub agentid: AgentId,
}

/// `cos.add`: COS credentials to hold for a Tencent Cloud APPID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CosPut {
    pub appid: CosAppId,
    #[serde(default)]
    pub secret_id: Option<String>,
    #[serde(default)]
    pub secret_key: Option<Secret>,
}

/// Held COS credentials named by their APPID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CosRef {
    pub appid: CosAppId,
}

/// `key.add`: a new caller key's name and scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAdd {
    pub name: String,
    #[serde(flatten)]
    pub scope: KeyScope,
}

/// A caller key named by its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRef {
    pub name: String,
}

/// An operation without fields (lists, the status report).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoFields {}

macro_rules! admin_ops {
    ($( $(#[$doc:meta])* $variant:ident($ty:ty) = $name:literal, changes: $changes:literal; )*) => {
        /// One admin operation with its fields.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum AdminOp {
            $( $(#[$doc])* $variant($ty), )*
        }

        impl AdminOp {
            /// Every admin interface name, in table order.
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            /// The interface that carries this operation.
            pub fn interface(&self) -> &'static str {
                match self { $( Self::$variant(_) => $name, )* }
            }

            /// Whether the operation changes anything (and is audited).
            pub fn changes(&self) -> bool {
                match self { $( Self::$variant(_) => $changes, )* }
            }

            /// The operation an admin interface's `para` asks for; PARA_ERR saying which field is wrong.
            pub fn parse(interface: &str, para: &Map<String, Value>) -> Result<Self, WaferError> {
                match interface {
                    $( $name => Ok(Self::$variant(fields(para)?)), )*
                    _ => Err(WaferError::new(ReturnCode::InterfaceErr, "unknown interfaceName")),
                }
            }

            /// The `para` that carries this operation.
            pub fn para(&self) -> Value {
                let v = match self { $( Self::$variant(f) => serde_json::to_value(f), )* };
                // The field types serialise to plain JSON values; nothing here can fail.
                v.unwrap_or_else(|_| Value::Object(Map::new()))
            }
        }
    };
}

admin_ops! {
    /// Add an app, or change the given fields of an existing one.
    AppAdd(AppPut) = "qcloud.admin.app.add", changes: true;
    /// Change the given fields of an existing app; never creates one.
    AppUpdate(AppPut) = "qcloud.admin.app.update", changes: true;
    AppList(NoFields) = "qcloud.admin.app.list", changes: false;
    AppRemove(AppRef) = "qcloud.admin.app.remove", changes: true;
    /// Lift a daily-quota block and remembered failures (after WeChat's `clear_quota`).
    AppUnblock(AppRef) = "qcloud.admin.app.unblock", changes: true;
    /// Register an app's API-security keys, or switch API security off for it.
    AppApiSecurity(ApiSecurityPut) = "qcloud.admin.app.api_security", changes: true;
    /// An API's daily quota (WeChat's `openapi/quota/get`): calls WeChat, so it runs where WeChat is reachable.
    AppQuota(QuotaGet) = "qcloud.admin.app.quota", changes: false;
    /// WeChat's `clear_quota` for the app (a few a month), then `unblock`.
    AppClearQuota(AppRef) = "qcloud.admin.app.clear_quota", changes: true;
    AgentAdd(AgentPut) = "qcloud.admin.agent.add", changes: true;
    AgentList(NoFields) = "qcloud.admin.agent.list", changes: false;
    AgentRemove(AgentRef) = "qcloud.admin.agent.remove", changes: true;
    CosAdd(CosPut) = "qcloud.admin.cos.add", changes: true;
    CosList(NoFields) = "qcloud.admin.cos.list", changes: false;
    CosRemove(CosRef) = "qcloud.admin.cos.remove", changes: true;
    KeyAdd(KeyAdd) = "qcloud.admin.key.add", changes: true;
    KeyList(NoFields) = "qcloud.admin.key.list", changes: false;
    KeyRevoke(KeyRef) = "qcloud.admin.key.revoke", changes: true;
    Status(NoFields) = "qcloud.admin.status", changes: false;
}

impl AdminOp {
    /// What the operation is about, for the audit line (never a secret).
    pub fn subject(&self) -> String {
        match self {
            Self::AppAdd(f) | Self::AppUpdate(f) => f.appid.to_string(),
            Self::AppRemove(f) | Self::AppUnblock(f) | Self::AppClearQuota(f) => f.appid.to_string(),
            Self::AppQuota(f) => f.appid.to_string(),
            Self::AppApiSecurity(f) => f.appid.to_string(),
            Self::AgentAdd(AgentPut { corpid, agentid, .. })
            | Self::AgentRemove(AgentRef { corpid, agentid }) => {
                format!("{corpid}/{agentid}")
            }
            Self::CosAdd(CosPut { appid, .. }) | Self::CosRemove(CosRef { appid }) => appid.to_string(),
            Self::KeyAdd(KeyAdd { name, .. }) | Self::KeyRevoke(KeyRef { name }) => name.clone(),
            Self::AppList(_) | Self::AgentList(_) | Self::CosList(_) | Self::KeyList(_) | Self::Status(_) => {
                String::new()
            }
        }
    }

    /// The action's name in the audit line: the interface name after `qcloud.admin.`.
    pub fn action(&self) -> &'static str {
        let name = self.interface();
        name.strip_prefix("qcloud.admin.").unwrap_or(name)
    }
}

/// A `para` object read as an operation's fields (other members, such as `admin_token`, are ignored).
fn fields<T: serde::de::DeserializeOwned>(para: &Map<String, Value>) -> Result<T, WaferError> {
    T::deserialize(serde::de::value::MapDeserializer::new(para.iter().map(|(k, v)| (k.as_str(), v))))
        .map_err(|e: serde_json::Error| WaferError::new(ReturnCode::ParaErr, format!("para: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_op() -> Vec<AdminOp> {
        let app: AppId = "wx1234".parse().unwrap();
        let (corpid, agentid): (CorpId, AgentId) = ("ww1".parse().unwrap(), "1000002".parse().unwrap());
        let cos: CosAppId = "1250000000".parse().unwrap();
        let put = AppPut {
            appid: app.clone(),
            secret: Some(Secret::new("APP-SECRET")),
            token_mode: Some(TokenMode::Classic),
            login_duration_days: Some(3),
            session_duration_secs: None,
        };
        vec![
            AdminOp::AppAdd(put.clone()),
            AdminOp::AppUpdate(AppPut { secret: None, ..put }),
            AdminOp::AppList(NoFields {}),
            AdminOp::AppRemove(AppRef { appid: app.clone() }),
            AdminOp::AppUnblock(AppRef { appid: app.clone() }),
            AdminOp::AppQuota(QuotaGet { appid: app.clone(), api: "/wxa/getwxacode".into() }),
            AdminOp::AppClearQuota(AppRef { appid: app.clone() }),
            AdminOp::AppApiSecurity(ApiSecurityPut {
                appid: app,
                off: false,
                sym_key: Some(Secret::new("SYM-KEY")),
                sym_sn: Some("0".repeat(32)),
                private_key: Some(Secret::new("PRIVATE-KEY")),
                private_key_sn: Some("1".repeat(32)),
                certs: vec![crate::apisec::CertInput { sn: "2".repeat(32), pem: "PEM".into() }],
            }),
            AdminOp::AgentAdd(AgentPut {
                corpid: corpid.clone(),
                agentid: agentid.clone(),
                secret: Some(Secret::new("AGENT-SECRET")),
                remark: Some("r".into()),
            }),
            AdminOp::AgentList(NoFields {}),
            AdminOp::AgentRemove(AgentRef { corpid, agentid }),
            AdminOp::CosAdd(CosPut {
                appid: cos.clone(),
                secret_id: Some("AKID".into()),
                secret_key: Some(Secret::new("COS-KEY")),
            }),
            AdminOp::CosList(NoFields {}),
            AdminOp::CosRemove(CosRef { appid: cos }),
            AdminOp::KeyAdd(KeyAdd {
                name: "svc".into(),
                scope: KeyScope {
                    apps: vec!["wx1234".into()],
                    apis: vec!["/wxa/".into()],
                    ..KeyScope::default()
                },
            }),
            AdminOp::KeyList(NoFields {}),
            AdminOp::KeyRevoke(KeyRef { name: "svc".into() }),
            AdminOp::Status(NoFields {}),
        ]
    }

    #[test]
    fn every_operation_reads_back_what_the_client_writes_and_debug_shows_no_secret() {
        let ops = every_op();
        assert_eq!(ops.len(), AdminOp::NAMES.len(), "one of each");
        for op in ops {
            let Value::Object(para) = op.para() else { panic!("{op:?}") };
            assert_eq!(AdminOp::parse(op.interface(), &para).unwrap(), op);
            let shown = format!("{op:?}");
            for secret in ["APP-SECRET", "AGENT-SECRET", "COS-KEY", "SYM-KEY", "PRIVATE-KEY"] {
                assert!(!shown.contains(secret), "{shown}");
            }
        }
    }

    #[test]
    fn fields_are_checked_and_named() {
        let para = |v: Value| v.as_object().unwrap().clone();
        let e = AdminOp::parse("qcloud.admin.app.remove", &para(serde_json::json!({}))).unwrap_err();
        assert_eq!(e.code, ReturnCode::ParaErr);
        assert!(e.message.contains("appid"), "{}", e.message);
        let e = AdminOp::parse("qcloud.admin.app.remove", &para(serde_json::json!({"appid": "wx 1"})))
            .unwrap_err();
        assert!(e.message.contains("appid must be"), "{}", e.message);
        let bad_mode = serde_json::json!({"appid": "wx1", "token_mode": "fast"});
        assert!(AdminOp::parse("qcloud.admin.app.add", &para(bad_mode))
            .unwrap_err()
            .message
            .contains("stable"));
        // WeCom agentids arrive as JSON numbers too; scopes as lists or comma-separated text.
        let agent = serde_json::json!({"corpid": "ww1", "agentid": 1000002});
        assert!(AdminOp::parse("qcloud.admin.agent.remove", &para(agent)).is_ok());
        let key = serde_json::json!({"name": "k", "apps": "wx1,wx2", "admin_token": "ignored"});
        match AdminOp::parse("qcloud.admin.key.add", &para(key)).unwrap() {
            AdminOp::KeyAdd(k) => assert_eq!(k.scope.apps, vec!["wx1", "wx2"]),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            AdminOp::parse("qcloud.admin.nope", &Map::new()).unwrap_err().code,
            ReturnCode::InterfaceErr
        );
    }
}

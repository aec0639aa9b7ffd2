//! Identifiers, checked by one set of rules wherever they arrive — envelope `para`, plain-HTTP paths, the CLI, the
//! admin interfaces, imports: WeChat appids and WeCom corpids (letters, digits, `_`, `-`), WeCom agentids and
//! Tencent Cloud APPIDs (digits). Each has a newtype whose `FromStr` is the only place its rule is written.

use std::fmt;

/// The kinds of identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    AppId,
    CorpId,
    AgentId,
    CosAppId,
}

impl IdKind {
    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::AppId => "appid",
            Self::CorpId => "corpid",
            Self::AgentId => "agentid",
            Self::CosAppId => "the Tencent Cloud APPID",
        }
    }

    fn rule(self) -> &'static str {
        match self {
            Self::AppId | Self::CorpId => "1 to 64 letters, digits, '_' or '-'",
            Self::AgentId => "the numeric AgentId (1 to 20 digits)",
            Self::CosAppId => "the numeric APPID (1 to 20 digits)",
        }
    }

    /// Whether `s` follows this kind's rule.
    pub fn check(self, s: &str) -> Result<(), IdError> {
        let ok = match self {
            Self::AppId | Self::CorpId => {
                !s.is_empty()
                    && s.len() <= 64
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            }
            Self::AgentId | Self::CosAppId => {
                !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit())
            }
        };
        if ok {
            Ok(())
        } else {
            Err(IdError(self))
        }
    }
}

/// An identifier that breaks its kind's rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdError(pub IdKind);

impl IdError {
    /// What the rule is, without the name (for messages that name the field themselves).
    pub fn rule(&self) -> &'static str {
        self.0.rule()
    }
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} must be {}", self.0.name(), self.0.rule())
    }
}

impl std::error::Error for IdError {}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }

            /// An identifier read back from storage, where only checked identifiers are ever written (through
            /// this type): not checked again.
            pub(crate) fn from_stored(s: String) -> Self {
                Self(s)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                $kind.check(s).map(|()| Self(s.to_owned()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(IdVisitor($kind)).map(Self)
            }
        }

        /// Read-only access as text (an identifier is passed upstream and into keys as the text it is).
        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

/// Reads an identifier given as a string, or (numeric kinds arrive that way from JSON) as a non-negative integer,
/// and checks it by its kind's rule.
struct IdVisitor(IdKind);

impl serde::de::Visitor<'_> for IdVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.0.name(), self.0.rule())
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        self.0.check(v).map(|()| v.to_owned()).map_err(E::custom)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
        self.visit_str(&v.to_string())
    }
}

id_type!(
    /// A WeChat appid (mini-program or official account).
    AppId,
    IdKind::AppId
);
id_type!(
    /// A WeCom corpid.
    CorpId,
    IdKind::CorpId
);
id_type!(
    /// A WeCom AgentId.
    AgentId,
    IdKind::AgentId
);
id_type!(
    /// A Tencent Cloud APPID (COS).
    CosAppId,
    IdKind::CosAppId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_one_rule() {
        assert!("wx1234567890abcdef".parse::<AppId>().is_ok());
        assert!("wx_app-1".parse::<AppId>().is_ok());
        for bad in ["", "wx 1", "wx.1", "wx/1", "wx:1", "微信", &"a".repeat(65)] {
            assert!(bad.parse::<AppId>().is_err(), "{bad}");
            assert!(bad.parse::<CorpId>().is_err(), "{bad}");
        }
        assert!("1000002".parse::<AgentId>().is_ok());
        assert!("10a".parse::<AgentId>().is_err());
        assert!("1250000000".parse::<CosAppId>().is_ok());
        assert!("wx1".parse::<CosAppId>().is_err());
        let e = "x y".parse::<CorpId>().unwrap_err();
        assert_eq!(e.to_string(), "corpid must be 1 to 64 letters, digits, '_' or '-'");
    }
}

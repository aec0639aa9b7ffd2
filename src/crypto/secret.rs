//! A secret carried through requests and records (an AppSecret, an agent secret, a COS SecretKey, a master or admin
//! key): its `Debug` never shows it, and it is read only through [`Secret::expose`]. It is serialised as itself,
//! because the one place it is serialised is the admin request that carries it to the server.

use secrecy::{ExposeSecret, SecretString};

/// A secret string.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// The secret itself, for the one use that needs it (sealing, an upstream call, a constant-time compare).
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// A secret borrowed from a request (a session's skey, a single-use login code): `Debug` never shows it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecretStr<'a>(&'a str);

impl<'a> SecretStr<'a> {
    pub fn new(value: &'a str) -> Self {
        Self(value)
    }

    /// The secret itself.
    pub fn expose(&self) -> &'a str {
        self.0
    }
}

impl std::fmt::Debug for SecretStr<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl PartialEq for Secret {
    /// Equality of two stored secrets (registry change detection), never of a presented one (those are compared
    /// in constant time, [`super::ct_eq`]).
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

impl From<SecretString> for Secret {
    fn from(s: SecretString) -> Self {
        Self(s)
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.expose())
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret_and_serde_carries_it() {
        let s = Secret::new("TOPSECRET");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"TOPSECRET\"");
        let back: Secret = serde_json::from_str("\"x\"").unwrap();
        assert_eq!(back.expose(), "x");
    }
}

//! The one turn of a caller's API path into the form sent upstream ([`ApiPath::parse`]), and the paths never
//! called on anyone's behalf. A path is accepted only if it is already in that form — no dot or empty segment,
//! nothing percent-encoded, no backslash, `@`, `:` or other separator — so what is checked (the refused list, a
//! caller key's API prefixes) is byte for byte what reaches WeChat: no URL parser downstream can turn it into
//! another path.

/// Paths that hand out credentials or need the secret (a segment-aware prefix each): never called for a caller.
pub const REFUSED: &[&str] = &["/cgi-bin/token", "/cgi-bin/stable_token", "/cgi-bin/gettoken", "/sns"];

/// Longest API path accepted.
pub const MAX_LEN: usize = 256;

/// A WeChat / WeCom API path in the exact form sent upstream (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiPath(String);

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not a plain path: a dot or empty segment, an encoded byte, a character outside `A-Za-z0-9/_-.`, too long.
    Malformed,
    /// A path that issues credentials or needs the secret.
    Refused,
}

impl PathError {
    pub fn message(self) -> &'static str {
        match self {
            Self::Malformed => {
                "must be a plain API path like /wxa/getwxacodeunlimit: letters, digits, _ - . only, \
                 no empty, . or .. segment, nothing percent-encoded"
            }
            Self::Refused => {
                "is an interface that issues credentials or needs the app secret: not available here"
            }
        }
    }
}

/// Whether `path` is `prefix` or lies below it (segment-aware: `/wxa` covers `/wxa/x`, not `/wxapp`).
pub fn under(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

impl ApiPath {
    /// The upstream form of `raw`, or why there is none.
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        let Some(rest) = raw.strip_prefix('/') else { return Err(PathError::Malformed) };
        let plain = raw.len() <= MAX_LEN
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"/_-.".contains(&b))
            && rest.split('/').all(|seg| !seg.is_empty() && seg.bytes().any(|b| b != b'.'));
        if !plain {
            return Err(PathError::Malformed);
        }
        // WeChat's front end may fold case: the refused list is checked case-insensitively.
        let lower = raw.to_ascii_lowercase();
        if REFUSED.iter().any(|r| under(&lower, r)) {
            return Err(PathError::Refused);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ApiPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_pass_and_credential_paths_never() {
        for ok in ["/wxa/getwxacodeunlimit", "/cgi-bin/message/custom/send", "/cgi-bin/tokenizer", "/a.b/c"] {
            assert_eq!(ApiPath::parse(ok).map(|p| p.0), Ok(ok.to_owned()), "{ok}");
        }
        for bad in [
            "",
            "wxa/x",
            "/",
            "/wxa//x",
            "/wxa/x/",
            "/cgi-bin/./token",
            "/cgi-bin/../cgi-bin/token",
            "/x/.../y",
            "/cgi-bin%2Ftoken",
            "/cgi-bin/%74oken",
            "/cgi-bin\\token",
            "//api.evil.example/x",
            "/@evil/x",
            "/x:80/y",
            "/wxa/x?y=1",
            "/wxa/x#y",
            "/wxa/x;y",
            "/wxa/ x",
        ] {
            assert_eq!(ApiPath::parse(bad), Err(PathError::Malformed), "{bad:?}");
        }
        for refused in [
            "/cgi-bin/token",
            "/CGI-BIN/Token",
            "/cgi-bin/stable_token",
            "/cgi-bin/gettoken",
            "/sns/jscode2session",
            "/sns",
        ] {
            assert_eq!(ApiPath::parse(refused), Err(PathError::Refused), "{refused}");
        }
        assert!(under("/wxa/x", "/wxa/") && under("/wxa/x", "/wxa") && under("/wxa", "/wxa"));
        assert!(!under("/wxapp/x", "/wxa") && !under("/wx", "/wxa"));
    }
}

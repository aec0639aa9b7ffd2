//! Which WeChat paths take API security: one table of data (`paths.txt`), plus the paths an operator adds
//! (`WAFER_API_SECURITY_PATHS`). An entry ending in `/` covers every path under it; others match exactly.

/// The built-in table.
const TABLE: &str = include_str!("paths.txt");

/// The paths calls are signed on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurePaths {
    extra: Vec<String>,
}

impl SecurePaths {
    /// The table plus `extra` (comma-separated entries; each must start with `/`).
    pub fn with_extra(extra: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for entry in extra.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if !entry.starts_with('/') || entry.contains(['?', '#', ' ']) || entry.contains("//") {
                return Err(format!(
                    "{entry:?} is not an API path (like /wxa/getuserriskrank, or /datacube/)"
                ));
            }
            out.push(entry.to_owned());
        }
        Ok(Self { extra: out })
    }

    /// Every entry: the table's, then the operator's.
    pub fn entries(&self) -> impl Iterator<Item = &str> {
        TABLE
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .chain(self.extra.iter().map(String::as_str))
    }

    /// Whether a call to `path` is signed.
    pub fn covers(&self, path: &str) -> bool {
        self.entries().any(|e| if e.ends_with('/') { path.starts_with(e) } else { path == e })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_and_an_operators_additions() {
        let p = SecurePaths::default();
        assert!(p.covers("/wxa/getuserriskrank"));
        assert!(p.covers("/wxa/business/getuserphonenumber"));
        assert!(p.covers("/cgi-bin/express/intracity/createorder"));
        assert!(p.covers("/datacube/getweanalysisappiddailyretaininfo"));
        assert!(!p.covers("/wxa/getuserriskrank/x"), "an exact entry covers no sub-path");
        assert!(!p.covers("/cgi-bin/media/upload"), "uploads never");
        assert!(!p.covers("/cgi-bin/express/intracity"), "a prefix entry covers what is under it");
        let p = SecurePaths::with_extra(" /wxa/new_api , /shop/ ").unwrap();
        assert!(p.covers("/wxa/new_api") && p.covers("/shop/order/get") && p.covers("/wxa/getwxacode"));
        assert!(SecurePaths::with_extra("wxa/x").is_err());
        assert!(SecurePaths::with_extra("/a?b").is_err());
        assert_eq!(SecurePaths::with_extra("").unwrap(), SecurePaths::default());
    }
}

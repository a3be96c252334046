//! Where a user, product or device belongs: an organisation and an administrative region.
//!
//! Regions are paths in the city's administrative tree (`/` is the whole city, `/hz/xihu` a
//! district, `/hz/xihu/lingyin` a street). The `lotus.api` policy decides what a principal may do
//! with a resource from both scopes; this module only says what a well-formed region and
//! organisation are, so that a policy never sees `/hz/../binjiang` or a trailing slash that
//! would make two spellings of one region.

use std::fmt;

/// Longest region path accepted (bytes) and deepest tree.
pub const MAX_REGION_LEN: usize = 256;
pub const MAX_REGION_DEPTH: usize = 8;
/// Longest organisation id accepted.
pub const MAX_ORG_LEN: usize = 64;

/// An organisation and a region, as stored and passed to policies.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    /// The owning organisation's id; empty = not assigned to one (visible to every org).
    pub org: String,
    /// A normalised region path; `/` is the whole city.
    pub region: String,
}

impl Default for Scope {
    fn default() -> Self {
        Scope {
            org: String::new(),
            region: "/".into(),
        }
    }
}

/// Why a region or organisation was refused; the text says what a valid one looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeError(pub String);

impl fmt::Display for ScopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScopeError {}

fn segment_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s != "."
        && s != ".."
}

/// Checks a region path: `/`, or `/a/b/c` with up to [`MAX_REGION_DEPTH`] segments of letters,
/// digits, `-`, `_` and `.` (Chinese place names are letters too).
pub fn parse_region(region: &str) -> Result<String, ScopeError> {
    let invalid = || {
        ScopeError(format!(
            "region {region:?} is not a region path: use `/` for the whole city or `/district/street` \
             (segments of letters, digits, '-', '_' and '.', at most {MAX_REGION_DEPTH} deep, no trailing '/')"
        ))
    };
    if region == "/" {
        return Ok(region.to_string());
    }
    if region.len() > MAX_REGION_LEN {
        return Err(invalid());
    }
    let rest = region.strip_prefix('/').ok_or_else(invalid)?;
    let segments: Vec<&str> = rest.split('/').collect();
    if segments.len() > MAX_REGION_DEPTH || !segments.iter().all(|s| segment_ok(s)) {
        return Err(invalid());
    }
    Ok(region.to_string())
}

/// Checks an organisation id: empty (none), or up to [`MAX_ORG_LEN`] letters, digits, `-`, `_`
/// and `.`.
pub fn parse_org(org: &str) -> Result<String, ScopeError> {
    if org.is_empty() || (org.len() <= MAX_ORG_LEN && segment_ok(org)) {
        Ok(org.to_string())
    } else {
        Err(ScopeError(format!(
            "org {org:?} is not an organisation id: up to {MAX_ORG_LEN} letters, digits, '-', '_' and '.'"
        )))
    }
}

/// Is `inner` the region `outer` or below it? (`/hz/xihu` covers `/hz/xihu/lingyin`, not
/// `/hz/xihuan`.) For callers that pre-filter lists; the decision itself is the policy's.
pub fn region_covers(outer: &str, inner: &str) -> bool {
    outer == "/"
        || inner == outer
        || inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions() {
        for ok in ["/", "/hz", "/hz/xihu", "/杭州/西湖区", "/a-b/c_d/e.f"] {
            assert_eq!(parse_region(ok).unwrap(), ok);
        }
        for bad in [
            "",
            "hz",
            "/hz/",
            "//hz",
            "/hz//x",
            "/hz/../bj",
            "/hz/.",
            "/a b",
            "/a/b/c/d/e/f/g/h/i",
        ] {
            assert!(parse_region(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn orgs() {
        assert_eq!(parse_org("").unwrap(), "");
        assert_eq!(parse_org("water-bureau").unwrap(), "water-bureau");
        assert!(parse_org("a/b").is_err());
        assert!(parse_org("..").is_err());
        assert!(parse_org(&"x".repeat(65)).is_err());
    }

    #[test]
    fn coverage() {
        assert!(region_covers("/", "/hz"));
        assert!(region_covers("/hz/xihu", "/hz/xihu"));
        assert!(region_covers("/hz/xihu", "/hz/xihu/lingyin"));
        assert!(!region_covers("/hz/xihu", "/hz/xihuan"));
        assert!(!region_covers("/hz/xihu", "/hz"));
    }
}

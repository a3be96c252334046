//! Administrative region paths (`/` is the whole city, `/hz/xihu/lingyin` a street under the
//! Xihu district), as used for users, devices and events across Lotus.

/// Deepest region path accepted.
pub const MAX_REGION_DEPTH: usize = 8;
/// Longest region path accepted, in bytes.
pub const MAX_REGION_LEN: usize = 256;

/// Describes a valid region path in error messages.
pub const REGION_FORMAT: &str = "`/` for the whole city or `/district/street` (segments of \
     letters, digits, '-', '_' and '.', at most 8 deep, no trailing '/')";

/// Is `region` a well-formed region path?
pub fn is_region(region: &str) -> bool {
    if region == "/" {
        return true;
    }
    if region.len() > MAX_REGION_LEN {
        return false;
    }
    let Some(rest) = region.strip_prefix('/') else {
        return false;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    segments.len() <= MAX_REGION_DEPTH
        && segments.iter().all(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

/// The region one level up: `/hz/xihu` for `/hz/xihu/lingyin`, `/` for `/hz`.
///
/// The whole city (`/`) has no parent and stays itself, so a step addressed to "the parent
/// region" of a city-wide event goes to the city level rather than nowhere.
pub fn parent_region(region: &str) -> String {
    match region.rfind('/') {
        Some(0) | None => "/".to_owned(),
        Some(i) => region[..i].to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents() {
        assert_eq!(parent_region("/hz/xihu/lingyin"), "/hz/xihu");
        assert_eq!(parent_region("/hz/xihu"), "/hz");
        assert_eq!(parent_region("/hz"), "/");
        assert_eq!(parent_region("/"), "/");
    }

    #[test]
    fn paths() {
        for ok in ["/", "/hz", "/hz/xihu/lingyin", "/杭州/西湖", "/a.b/c-d/e_f"] {
            assert!(is_region(ok), "{ok}");
        }
        for bad in ["", "hz", "/hz/", "//hz", "/hz xihu", "/1/2/3/4/5/6/7/8/9"] {
            assert!(!is_region(bad), "{bad}");
        }
    }
}

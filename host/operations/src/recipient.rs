//! Who a notification is for, as rules and channels name them.

use lotus_workflow::ResolvedAssignee;

/// `user:<username>`, `role:<role>@<region>` (every holder of the role responsible for the
/// region: whose own region is the region or contains it), or an address a channel sends to
/// directly: `mailto:duty@city.example`, `tel:+8613800000000`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    User(String),
    Role { role: String, region: String },
    Address(String),
}

impl Recipient {
    pub fn parse(s: &str) -> Result<Recipient, String> {
        let bad = || {
            format!(
                "recipient `{s}` is not valid: write `user:<username>`, `role:<role>@<region>` (e.g. `role:dispatcher@/hz/xihu`), `mailto:<address>` or `tel:<number>`"
            )
        };
        if let Some(user) = s.strip_prefix("user:") {
            if user.is_empty() {
                return Err(bad());
            }
            return Ok(Recipient::User(user.to_string()));
        }
        for scheme in ["mailto:", "tel:"] {
            if let Some(addr) = s.strip_prefix(scheme) {
                if addr.is_empty() || addr.chars().any(char::is_whitespace) {
                    return Err(bad());
                }
                return Ok(Recipient::Address(addr.to_string()));
            }
        }
        if let Some(rest) = s.strip_prefix("role:") {
            let (role, region) = rest.split_once('@').unwrap_or((rest, "/"));
            if role.is_empty() {
                return Err(bad());
            }
            let region =
                lotus_model::scope::parse_region(region).map_err(|e| format!("{}: {e}", bad()))?;
            return Ok(Recipient::Role {
                role: role.to_string(),
                region,
            });
        }
        Err(bad())
    }
}

impl From<&ResolvedAssignee> for Recipient {
    fn from(a: &ResolvedAssignee) -> Recipient {
        match a {
            ResolvedAssignee::User { username } => Recipient::User(username.clone()),
            ResolvedAssignee::Role { role, region, .. } => Recipient::Role {
                role: role.clone(),
                region: region.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(
            Recipient::parse("user:chen").unwrap(),
            Recipient::User("chen".into())
        );
        assert_eq!(
            Recipient::parse("role:dispatcher@/hz/xihu").unwrap(),
            Recipient::Role {
                role: "dispatcher".into(),
                region: "/hz/xihu".into()
            }
        );
        assert_eq!(
            Recipient::parse("role:duty").unwrap(),
            Recipient::Role {
                role: "duty".into(),
                region: "/".into()
            }
        );
        assert_eq!(
            Recipient::parse("mailto:duty@city.example").unwrap(),
            Recipient::Address("duty@city.example".into())
        );
        assert!(Recipient::parse("chen").is_err());
        assert!(Recipient::parse("tel:").is_err());
        assert!(Recipient::parse("role:x@/a/../b").is_err());
    }
}

//! JIDs (RFC 7622), simplified: parts are checked for the characters the format forbids
//! and their lengths, the local part and the domain are lower-cased (what nodeprep and
//! nameprep do for ASCII; full Unicode normalization is not done, so two spellings of a
//! non-ASCII address that a server would take as one stay two here).

use std::fmt;

/// Each part of a JID is at most this long (bytes), as RFC 7622 says.
pub const MAX_PART: usize = 1023;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid JID {jid:?}: {reason}")]
pub struct JidError {
    pub jid: String,
    pub reason: &'static str,
}

/// `node@domain` or `domain`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BareJid {
    node: Option<String>,
    domain: String,
}

/// A JID with an optional resource: `node@domain/resource`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Jid {
    bare: BareJid,
    resource: Option<String>,
}

fn err(jid: &str, reason: &'static str) -> JidError {
    JidError {
        jid: jid.chars().take(100).collect(),
        reason,
    }
}

impl BareJid {
    pub fn parse(s: &str) -> Result<BareJid, JidError> {
        let jid = Jid::parse(s)?;
        if jid.resource.is_some() {
            return Err(err(s, "a bare JID has no resource"));
        }
        Ok(jid.bare)
    }

    /// A user's address as a destination: `alice@example.org`, `xmpp:alice@example.org` or
    /// `xmpp://alice@example.org` (a query after `?` is ignored; a resource is refused). It must have a
    /// local part: a bare domain is a server or a service, not a person.
    pub fn parse_destination(s: &str) -> Result<BareJid, JidError> {
        let t = s.trim();
        let t = t
            .strip_prefix("xmpp://")
            .or_else(|| t.strip_prefix("xmpp:"))
            .unwrap_or(t);
        let t = t.split(['?', '#']).next().unwrap_or(t);
        let jid = Jid::parse(t)?;
        if jid.bare.node.is_none() {
            return Err(err(s, "an XMPP destination needs a user (user@domain)"));
        }
        if jid.resource.is_some() {
            return Err(err(s, "an XMPP destination is a bare JID (no /resource)"));
        }
        Ok(jid.bare)
    }

    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn with_resource(&self, resource: &str) -> Result<Jid, JidError> {
        Jid::parse(&format!("{self}/{resource}"))
    }
}

impl Jid {
    pub fn parse(s: &str) -> Result<Jid, JidError> {
        if s.len() > 3 * MAX_PART + 2 {
            return Err(err(s, "too long"));
        }
        let (bare, resource) = match s.split_once('/') {
            Some((b, r)) => (b, Some(r)),
            None => (s, None),
        };
        let (node, domain) = match bare.split_once('@') {
            Some((n, d)) => (Some(n), d),
            None => (None, bare),
        };
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        if domain.is_empty() || domain.len() > MAX_PART {
            return Err(err(s, "the domain must be 1 to 1023 bytes"));
        }
        if domain
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "@/\"&'<>:".contains(c))
            && !(domain.starts_with('[') && domain.ends_with(']'))
        {
            return Err(err(s, "the domain has a character a domain cannot have"));
        }
        if let Some(n) = node {
            if n.is_empty() || n.len() > MAX_PART {
                return Err(err(s, "the local part must be 1 to 1023 bytes"));
            }
            if n.chars()
                .any(|c| c.is_whitespace() || c.is_control() || "\"&'/:<>@".contains(c))
            {
                return Err(err(s, "the local part has a character a JID cannot have"));
            }
        }
        if let Some(r) = resource
            && (r.is_empty() || r.len() > MAX_PART || r.chars().any(char::is_control))
        {
            return Err(err(s, "the resource must be 1 to 1023 bytes, no controls"));
        }
        Ok(Jid {
            bare: BareJid {
                node: node.map(str::to_lowercase),
                domain: domain.to_lowercase(),
            },
            resource: resource.map(str::to_owned),
        })
    }

    pub fn bare(&self) -> &BareJid {
        &self.bare
    }

    pub fn resource(&self) -> Option<&str> {
        self.resource.as_deref()
    }
}

impl From<BareJid> for Jid {
    fn from(bare: BareJid) -> Jid {
        Jid {
            bare,
            resource: None,
        }
    }
}

impl fmt::Display for BareJid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(n) = &self.node {
            write!(f, "{n}@")?;
        }
        f.write_str(&self.domain)
    }
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.bare)?;
        if let Some(r) = &self.resource {
            write!(f, "/{r}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for BareJid {
    type Err = JidError;
    fn from_str(s: &str) -> Result<BareJid, JidError> {
        BareJid::parse(s)
    }
}

impl std::str::FromStr for Jid {
    type Err = JidError;
    fn from_str(s: &str) -> Result<Jid, JidError> {
        Jid::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalizes() {
        let j = Jid::parse("Alice@Example.ORG/Phone 1").unwrap();
        assert_eq!(j.bare().node(), Some("alice"));
        assert_eq!(j.bare().domain(), "example.org");
        assert_eq!(j.resource(), Some("Phone 1"));
        assert_eq!(j.to_string(), "alice@example.org/Phone 1");
        assert_eq!(
            Jid::parse("a@b/c/d").unwrap().resource(),
            Some("c/d"),
            "a resource may contain '/'"
        );
        assert_eq!(
            BareJid::parse("tidings.example.org").unwrap().to_string(),
            "tidings.example.org"
        );
        assert!(BareJid::parse("a@b/c").is_err());
    }

    #[test]
    fn rejects_bad_jids() {
        for bad in [
            "", "@b", "a@", "a b@c", "a@b c", "a@b/", "a<b@c", "a@b@c", "a:b@c",
        ] {
            assert!(Jid::parse(bad).is_err(), "{bad}");
        }
        assert!(Jid::parse(&format!("{}@b", "a".repeat(1024))).is_err());
    }

    #[test]
    fn destinations() {
        for s in [
            "alice@example.org",
            "xmpp:alice@example.org",
            "xmpp://alice@example.org",
            " xmpp://Alice@example.org?message ",
        ] {
            assert_eq!(
                BareJid::parse_destination(s).unwrap().to_string(),
                "alice@example.org",
                "{s}"
            );
        }
        assert!(BareJid::parse_destination("example.org").is_err());
        assert!(BareJid::parse_destination("xmpp://alice@example.org/phone").is_err());
    }
}

//! Sandbox and container ids: 64 hex characters, resolvable by unique prefix
//! (as containerd allows).

use std::fmt;

use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Errors of id parsing and prefix resolution.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    /// Nothing matches the id or prefix.
    #[error("no {kind} matches id {prefix:?}")]
    NotFound {
        /// "pod sandbox" or "container".
        kind: &'static str,
        /// What was asked for.
        prefix: String,
    },
    /// More than one object matches the prefix.
    #[error("id prefix {prefix:?} matches more than one {kind}")]
    Ambiguous {
        /// "pod sandbox" or "container".
        kind: &'static str,
        /// What was asked for.
        prefix: String,
    },
    /// Empty or not hex.
    #[error("invalid id {0:?}: expected hex characters")]
    Invalid(String),
}

/// A 256-bit random id in lowercase hex.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Id(String);

impl Id {
    /// A fresh random id.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        Id(hex::encode(bytes))
    }

    /// Parses a full id (64 lowercase hex characters).
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.len() == 64 && is_hex(s) {
            Ok(Id(s.to_owned()))
        } else {
            Err(IdError::Invalid(s.to_owned()))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 characters, for names of netns, taps and the like.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

fn is_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Finds the one id among `ids` that starts with `prefix`.
pub fn resolve_prefix<'a, I>(ids: I, prefix: &str, kind: &'static str) -> Result<Id, IdError>
where
    I: IntoIterator<Item = &'a Id>,
{
    if prefix.is_empty() || !is_hex(prefix) {
        return Err(IdError::NotFound {
            kind,
            prefix: prefix.to_owned(),
        });
    }
    let mut found: Option<&Id> = None;
    for id in ids {
        if id.0.starts_with(prefix) {
            if id.0.len() == prefix.len() {
                return Ok(id.clone());
            }
            if found.is_some() {
                return Err(IdError::Ambiguous {
                    kind,
                    prefix: prefix.to_owned(),
                });
            }
            found = Some(id);
        }
    }
    found.cloned().ok_or_else(|| IdError::NotFound {
        kind,
        prefix: prefix.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: char) -> Id {
        Id(std::iter::repeat_n(c, 64).collect())
    }

    #[test]
    fn generated_ids_are_full_hex_and_distinct() {
        let a = Id::generate();
        let b = Id::generate();
        assert_ne!(a, b);
        assert_eq!(Id::parse(a.as_str()).unwrap(), a);
        assert_eq!(a.short().len(), 12);
    }

    #[test]
    fn prefixes_resolve_uniquely() {
        let mut a = id('a');
        a.0.replace_range(..2, "ab");
        let mut b = id('a');
        b.0.replace_range(..2, "ac");
        let ids = [a.clone(), b.clone()];
        assert_eq!(resolve_prefix(&ids, "ab", "pod sandbox").unwrap(), a);
        assert_eq!(resolve_prefix(&ids, b.as_str(), "pod sandbox").unwrap(), b);
        assert!(matches!(
            resolve_prefix(&ids, "a", "pod sandbox"),
            Err(IdError::Ambiguous { .. })
        ));
        assert!(matches!(
            resolve_prefix(&ids, "ff", "pod sandbox"),
            Err(IdError::NotFound { .. })
        ));
        assert!(matches!(
            resolve_prefix(&ids, "", "pod sandbox"),
            Err(IdError::NotFound { .. })
        ));
        assert!(matches!(
            resolve_prefix(&ids, "../x", "pod sandbox"),
            Err(IdError::NotFound { .. })
        ));
    }

    #[test]
    fn parse_rejects_non_ids() {
        assert!(Id::parse("abc").is_err());
        assert!(Id::parse(&"g".repeat(64)).is_err());
        assert!(Id::parse(&"A".repeat(64)).is_err());
    }
}

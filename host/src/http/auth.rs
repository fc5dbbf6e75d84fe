//! Bearer tokens: the config holds each token's SHA-256, never the token. A request's token
//! is hashed and compared with every configured hash in constant time (no early exit), so
//! timing reveals neither which token nor how much of it matched.

use sha2::{Digest, Sha256};

use crate::config::{Scope, TokenConfig};

/// A configured token.
#[derive(Debug, Clone)]
pub struct Token {
    /// Its name (logs, audit).
    pub name: String,
    digest: [u8; 32],
    scopes: Vec<Scope>,
    sets: Vec<String>,
}

/// Why a request is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// No token, or not a known one: 401.
    Unauthenticated(&'static str),
    /// A known token without the scope or the feature set: 403.
    Forbidden(String),
}

impl Token {
    /// From the config (validated: 64 hex digits).
    pub fn from_config(config: &TokenConfig) -> Token {
        let mut digest = [0u8; 32];
        if let Ok(bytes) = hex::decode(&config.sha256) {
            if bytes.len() == 32 {
                digest.copy_from_slice(&bytes);
            }
        }
        Token {
            name: config.name.clone(),
            digest,
            scopes: config.scopes.clone(),
            sets: config.sets.clone(),
        }
    }

    /// Whether the token may do `scope` (on `set`, when the route names one).
    pub fn allows(&self, scope: Scope, set: Option<&str>) -> Result<(), Denied> {
        if !self.scopes.contains(&scope) && !self.scopes.contains(&Scope::Admin) {
            return Err(Denied::Forbidden(format!(
                "token \"{}\" lacks the {scope:?} scope",
                self.name
            )));
        }
        if let Some(set) = set {
            if !self.sets.is_empty() && !self.sets.iter().any(|s| s == set) {
                return Err(Denied::Forbidden(format!(
                    "token \"{}\" is not allowed on feature set \"{set}\"",
                    self.name
                )));
            }
        }
        Ok(())
    }
}

/// A new random token (`<prefix>_` and 64 hex digits from the system's random source).
pub fn new_token(prefix: &str) -> std::io::Result<String> {
    use std::io::Read;
    let mut random = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
    Ok(format!("{prefix}_{}", hex::encode(random)))
}

/// The SHA-256 of a token, as the config holds it (hex).
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The token an `Authorization: Bearer …` header value names.
pub fn authenticate<'a>(tokens: &'a [Token], header: Option<&str>) -> Result<&'a Token, Denied> {
    let Some(header) = header else {
        return Err(Denied::Unauthenticated(
            "missing bearer token (Authorization: Bearer <token>)",
        ));
    };
    let Some(presented) = header.strip_prefix("Bearer ").map(str::trim) else {
        return Err(Denied::Unauthenticated("expected Authorization: Bearer <token>"));
    };
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let mut found = None;
    for token in tokens {
        let difference = token.digest.iter().zip(&digest).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if difference == 0 && found.is_none() {
            found = Some(token);
        }
    }
    found.ok_or(Denied::Unauthenticated("unknown token"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(scopes: Vec<Scope>, sets: Vec<String>) -> Token {
        Token::from_config(&TokenConfig {
            name: "t".into(),
            sha256: hash_token("secret"),
            scopes,
            sets,
        })
    }

    #[test]
    fn a_token_is_found_by_its_hash_and_checked_for_scope_and_set() {
        let tokens = [token(vec![Scope::Read], vec!["tx".into()])];
        assert!(matches!(authenticate(&tokens, None), Err(Denied::Unauthenticated(_))));
        assert!(matches!(
            authenticate(&tokens, Some("Bearer nope")),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            authenticate(&tokens, Some("Basic c2VjcmV0")),
            Err(Denied::Unauthenticated(_))
        ));
        let t = authenticate(&tokens, Some("Bearer secret")).unwrap();
        assert_eq!(t.allows(Scope::Read, Some("tx")), Ok(()));
        assert!(matches!(
            t.allows(Scope::Read, Some("other")),
            Err(Denied::Forbidden(_))
        ));
        assert!(matches!(t.allows(Scope::Ingest, Some("tx")), Err(Denied::Forbidden(_))));
        let admin = token(vec![Scope::Admin], vec![]);
        assert_eq!(admin.allows(Scope::Deploy, None), Ok(()));
    }
}

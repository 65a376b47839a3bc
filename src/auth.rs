//! Authentication: JWT verification with jsonwebtoken, and who the caller is (`Principal`).
//!
//! The accepted algorithms come from configuration, never from the token: HS256 when
//! `auth.hs256_secret` is set, RS256 or ES256 (by the key's type) when
//! `auth.public_key_pem_file` is set. A token whose header names anything else — `none`
//! included — is refused before any key is tried. `exp` is required, `nbf` is checked, and
//! `iss`/`aud` become required claims when configured (jsonwebtoken would otherwise pass a
//! token that lacks them).

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::{
    config::{AuthSettings, configured},
    domain::{Id, LocationId, TenantId, UserId},
};

/// The roles of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    User,
    Admin,
    Service,
}

impl Role {
    fn parse(s: &str) -> Option<Role> {
        match s {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            "service" => Some(Role::Service),
            _ => None,
        }
    }
}

/// The claims of a Switchboard token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub tenant: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locations: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// The authenticated caller: parsed claims.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: TenantId,
    pub user: UserId,
    pub name: Option<String>,
    pub roles: Vec<Role>,
    pub locations: Arc<[LocationId]>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
}

impl Principal {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// `user` or `admin`: may use the Message Center.
    pub fn is_member(&self) -> bool {
        self.has(Role::User) || self.has(Role::Admin)
    }

    pub fn grants(&self, location: &LocationId) -> bool {
        self.locations.contains(location)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Verifies tokens against the configured keys.
pub struct Verifier {
    hs256: Option<(DecodingKey, Validation)>,
    public: Option<(DecodingKey, Validation)>,
}

impl Verifier {
    pub fn from_settings(s: &AuthSettings) -> anyhow::Result<Verifier> {
        let hs256 = configured(&s.hs256_secret).map(|secret| {
            (
                DecodingKey::from_secret(secret.as_bytes()),
                validation(Algorithm::HS256, s),
            )
        });
        let public = match configured(&s.public_key_pem_file) {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path).with_context(|| format!("reading {path}"))?;
                let (key, alg) = DecodingKey::from_rsa_pem(&pem)
                    .map(|k| (k, Algorithm::RS256))
                    .or_else(|_| DecodingKey::from_ec_pem(&pem).map(|k| (k, Algorithm::ES256)))
                    .with_context(|| format!("{path} holds neither an RSA nor an EC public key"))?;
                Some((key, validation(alg, s)))
            }
        };
        anyhow::ensure!(
            hs256.is_some() || public.is_some(),
            "configure auth.hs256_secret or auth.public_key_pem_file"
        );
        Ok(Verifier { hs256, public })
    }

    /// Verifies `token` and parses its claims.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let (key, validation) = [&self.hs256, &self.public]
            .into_iter()
            .flatten()
            .find(|(_, v)| v.algorithms.contains(&header.alg))
            .ok_or_else(|| AuthError::Invalid(format!("algorithm {:?} is not accepted", header.alg)))?;
        let data = jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Invalid(e.to_string()),
        })?;
        principal(data.claims)
    }
}

fn validation(alg: Algorithm, s: &AuthSettings) -> Validation {
    let mut v = Validation::new(alg);
    v.algorithms = vec![alg];
    v.validate_exp = true;
    v.validate_nbf = true;
    v.leeway = s.leeway_secs;
    let mut required = vec!["exp"];
    match configured(&s.issuer) {
        Some(iss) => {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        None => v.iss = None,
    }
    match configured(&s.audience) {
        Some(aud) => {
            v.set_audience(&[aud]);
            required.push("aud");
        }
        None => v.validate_aud = false,
    }
    v.set_required_spec_claims(&required);
    v
}

fn principal(c: Claims) -> Result<Principal, AuthError> {
    let bad = |what: &str| AuthError::Invalid(format!("claim {what} is malformed"));
    let tenant = TenantId::parse(&c.tenant).map_err(|_| bad("tenant"))?;
    let user = UserId::parse(&c.sub).map_err(|_| bad("sub"))?;
    let roles = c
        .roles
        .iter()
        .map(|r| Role::parse(r).ok_or_else(|| bad("roles")))
        .collect::<Result<Vec<_>, _>>()?;
    let locations = match c.locations {
        Some(ls) => ls
            .iter()
            .map(|l| LocationId::parse(l).map_err(|_| bad("locations")))
            .collect::<Result<Vec<_>, _>>()?,
        None if roles.iter().any(|r| matches!(r, Role::User | Role::Admin)) => {
            return Err(bad("locations"));
        }
        None => Vec::new(),
    };
    Ok(Principal {
        tenant,
        user,
        name: c.name,
        roles,
        locations: locations.into(),
        exp: c.exp,
    })
}

/// What `switchboard token` and the tests mint.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub sub: String,
    pub tenant: String,
    pub roles: Vec<String>,
    pub locations: Vec<String>,
    pub name: Option<String>,
    pub ttl: Duration,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl TokenSpec {
    pub fn new(sub: &str, tenant: &str, roles: &[&str], locations: &[&str]) -> Self {
        TokenSpec {
            sub: sub.into(),
            tenant: tenant.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            locations: locations.iter().map(|l| l.to_string()).collect(),
            name: None,
            ttl: Duration::from_secs(3600),
            issuer: None,
            audience: None,
        }
    }
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs `spec` with an HS256 secret.
pub fn mint_hs256(secret: &str, spec: &TokenSpec) -> String {
    let claims = Claims {
        sub: spec.sub.clone(),
        tenant: spec.tenant.clone(),
        roles: spec.roles.clone(),
        locations: Some(spec.locations.clone()),
        name: spec.name.clone(),
        exp: now_secs() + spec.ttl.as_secs(),
        iss: spec.issuer.clone(),
        aud: spec.audience.clone(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    // unwrap: HS256 encoding of a serializable struct cannot fail.
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn settings() -> AuthSettings {
        let mut s = Settings::defaults().auth;
        s.hs256_secret = "unit-secret".into();
        s
    }

    fn verifier(s: &AuthSettings) -> Verifier {
        Verifier::from_settings(s).unwrap()
    }

    #[test]
    fn a_minted_token_verifies_to_its_claims() {
        let s = settings();
        let t = mint_hs256("unit-secret", &TokenSpec::new("u1", "acme", &["user"], &["L1"]));
        let p = verifier(&s).verify(&t).unwrap();
        assert_eq!(p.user.as_str(), "u1");
        assert_eq!(p.tenant.as_str(), "acme");
        assert!(p.grants(&LocationId::parse("L1").unwrap()));
        assert!(p.is_member());
    }

    #[test]
    fn a_token_signed_with_another_secret_is_invalid() {
        let t = mint_hs256("other", &TokenSpec::new("u1", "acme", &["user"], &["L1"]));
        assert!(matches!(verifier(&settings()).verify(&t), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn an_expired_token_is_expired() {
        let claims = serde_json::json!({"sub": "u", "tenant": "t", "roles": ["user"], "locations": [], "exp": now_secs() - 3600});
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"unit-secret"),
        )
        .unwrap();
        assert_eq!(verifier(&settings()).verify(&t).unwrap_err(), AuthError::Expired);
    }

    #[test]
    fn a_token_without_exp_is_refused() {
        let claims = serde_json::json!({"sub": "u", "tenant": "t", "roles": ["user"], "locations": []});
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"unit-secret"),
        )
        .unwrap();
        assert!(verifier(&settings()).verify(&t).is_err());
    }

    #[test]
    fn alg_none_and_unconfigured_algorithms_are_refused() {
        use base64_free::b64;
        let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64(format!(
            r#"{{"sub":"u","tenant":"t","roles":["user"],"locations":[],"exp":{}}}"#,
            now_secs() + 60
        )
        .as_bytes());
        assert!(verifier(&settings()).verify(&format!("{header}.{body}.")).is_err());
        let hs384 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &serde_json::json!({"sub":"u","tenant":"t","roles":["user"],"locations":[],"exp": now_secs()+60}),
            &EncodingKey::from_secret(b"unit-secret"),
        )
        .unwrap();
        assert!(verifier(&settings()).verify(&hs384).is_err());
    }

    #[test]
    fn issuer_and_audience_are_required_when_configured() {
        let mut s = settings();
        s.issuer = "https://issuer".into();
        s.audience = "switchboard".into();
        let mut spec = TokenSpec::new("u1", "acme", &["user"], &["L1"]);
        let v = verifier(&s);
        assert!(v.verify(&mint_hs256("unit-secret", &spec)).is_err(), "no iss/aud");
        spec.issuer = Some("https://issuer".into());
        assert!(v.verify(&mint_hs256("unit-secret", &spec)).is_err(), "no aud");
        spec.audience = Some("switchboard".into());
        assert!(v.verify(&mint_hs256("unit-secret", &spec)).is_ok());
        spec.audience = Some("other".into());
        assert!(v.verify(&mint_hs256("unit-secret", &spec)).is_err(), "wrong aud");
    }

    #[test]
    fn members_need_locations_and_roles_must_be_known() {
        let v = verifier(&settings());
        let enc = |c: serde_json::Value| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &c,
                &EncodingKey::from_secret(b"unit-secret"),
            )
            .unwrap()
        };
        let exp = now_secs() + 60;
        assert!(
            v.verify(&enc(
                serde_json::json!({"sub":"u","tenant":"t","roles":["user"],"exp":exp})
            ))
            .is_err()
        );
        assert!(
            v.verify(&enc(
                serde_json::json!({"sub":"u","tenant":"t","roles":["root"],"locations":[],"exp":exp})
            ))
            .is_err()
        );
        assert!(
            v.verify(&enc(
                serde_json::json!({"sub":"svc","tenant":"t","roles":["service"],"exp":exp})
            ))
            .is_ok()
        );
    }

    /// Just enough base64url to hand-craft an unsigned token.
    mod base64_free {
        pub fn b64(input: &[u8]) -> String {
            const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut out = String::new();
            for chunk in input.chunks(3) {
                let n = chunk
                    .iter()
                    .enumerate()
                    .fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
                for i in 0..=chunk.len() {
                    out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                }
            }
            out
        }
    }
}

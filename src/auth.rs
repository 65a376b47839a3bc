//! Authentication: JWT verification with jsonwebtoken, and who the caller is (`Principal`).
//!
//! The accepted algorithms come from configuration, never from the token: HS256 when
//! `auth.hs256_secret` is set, RS256 or ES256 (by the key's type) when
//! `auth.public_key_pem_file` is set. A token whose header names anything else — `none`
//! included — is refused before any key is tried. `exp` is required, `nbf` is checked, and
//! `iss`/`aud` become required claims when configured (jsonwebtoken would otherwise pass a
//! token that lacks them).
//!
//! jsonwebtoken validates the registered claims itself, as RFC 7519 writes them: `aud` a
//! string or an array (it passes when any element is the configured audience), `exp`/`nbf`
//! any JSON number. Our own `Claims` must accept every token that validation passes, so it
//! reads `aud` as a string or an array and the NumericDates as any non-negative number
//! (`iat` it does not read at all).
//!
//! A verifier remembers the tokens it verified lately (`MEMO_TOKENS`, each at most
//! `MEMO_TOKEN_BYTES`) and whom they name: the same bytes again are the same signature over
//! the same claims under the same keys (fixed for the process's life), so only the expiry is
//! checked again, as jsonwebtoken checks it (leeway included). An ingestion service sends
//! one token with every message; its verification was about 5 % of a node's CPU in W4.

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
    memo::Memo,
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
    /// Seconds since the epoch; a fractional value is rounded down (the session expires no
    /// later than the token says).
    #[serde(deserialize_with = "numeric_date")]
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
}

/// The `aud` claim: one audience or several (RFC 7519, section 4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// A NumericDate (RFC 7519, section 2): any non-negative JSON number of seconds, fractions
/// included, rounded down to whole seconds.
fn numeric_date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    use serde::de::Error;
    let n = serde_json::Number::deserialize(d)?;
    if let Some(secs) = n.as_u64() {
        return Ok(secs);
    }
    match n.as_f64() {
        // `as` saturates, and the bound keeps the cast exact enough for a date.
        Some(f) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => Ok(f.floor() as u64),
        _ => Err(D::Error::custom(
            "a NumericDate must be a non-negative number of seconds",
        )),
    }
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

/// How many verified tokens a verifier remembers; when full, it forgets them all and starts
/// again (only tokens that verified are kept, so only a holder of valid tokens fills it).
const MEMO_TOKENS: usize = 4_096;
/// A longer token is verified every time.
const MEMO_TOKEN_BYTES: usize = 2_048;

/// Verifies tokens against the configured keys.
pub struct Verifier {
    hs256: Option<(DecodingKey, Validation)>,
    public: Option<(DecodingKey, Validation)>,
    leeway: u64,
    /// Tokens verified lately, as given, and whom they name (see the module's doc).
    verified: Memo<Principal>,
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
        Ok(Verifier {
            hs256,
            public,
            leeway: s.leeway_secs,
            verified: Memo::new(MEMO_TOKENS, MEMO_TOKEN_BYTES),
        })
    }

    /// Verifies `token` and parses its claims; a token verified lately is only checked for
    /// expiry (see the module's doc).
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        self.verify_at(token, now_secs())
    }

    /// `verify`, the expiry of a remembered token checked against `now` (seconds since the
    /// epoch).
    fn verify_at(&self, token: &str, now: u64) -> Result<Principal, AuthError> {
        if let Some(known) = self.verified.get(token) {
            // As jsonwebtoken: expired when `exp` is before `now` less the leeway.
            if known.exp < now.saturating_sub(self.leeway) {
                return Err(AuthError::Expired);
            }
            return Ok(known);
        }
        let principal = self.verify_anew(token)?;
        self.verified.remember(token, &principal);
        Ok(principal)
    }

    fn verify_anew(&self, token: &str) -> Result<Principal, AuthError> {
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
        aud: spec.audience.clone().map(Audience::One),
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
    fn a_remembered_token_names_the_same_caller_until_it_expires() {
        let s = settings();
        let v = verifier(&s);
        let t = mint_hs256("unit-secret", &TokenSpec::new("u1", "acme", &["user"], &["L1"]));
        let first = v.verify(&t).unwrap();
        assert_eq!(v.verified.len(), 1, "remembered");
        let again = v.verify_at(&t, first.exp).unwrap();
        assert_eq!(
            (again.user, again.tenant, again.exp),
            (first.user.clone(), first.tenant.clone(), first.exp)
        );
        assert!(v.verify_at(&t, first.exp + s.leeway_secs).is_ok(), "within the leeway");
        assert_eq!(
            v.verify_at(&t, first.exp + s.leeway_secs + 1).unwrap_err(),
            AuthError::Expired,
            "past it, as a fresh verification would say"
        );
        // What failed is not remembered, and neither is a long token.
        let forged = mint_hs256("other", &TokenSpec::new("u1", "acme", &["user"], &["L1"]));
        assert!(v.verify(&forged).is_err() && v.verify(&forged).is_err());
        let mut long = TokenSpec::new("u1", "acme", &["user"], &["L1"]);
        long.name = Some("x".repeat(MEMO_TOKEN_BYTES));
        assert!(v.verify(&mint_hs256("unit-secret", &long)).is_ok());
        assert_eq!(v.verified.len(), 1);
    }

    #[test]
    fn the_verifiers_memory_is_bounded() {
        let v = verifier(&settings());
        for i in 0..MEMO_TOKENS + 3 {
            let t = mint_hs256(
                "unit-secret",
                &TokenSpec::new(&format!("u{i}"), "acme", &["service"], &[]),
            );
            assert_eq!(v.verify(&t).unwrap().user.as_str(), format!("u{i}"));
            assert!(v.verified.len() <= MEMO_TOKENS);
        }
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

    /// Signs arbitrary claims with the unit secret.
    fn signed(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"unit-secret"),
        )
        .unwrap()
    }

    /// A user token's claims with `extra` merged over them.
    fn claims_with(extra: serde_json::Value) -> serde_json::Value {
        let mut c = serde_json::json!({"sub": "u1", "tenant": "acme", "roles": ["user"], "locations": ["L1"], "exp": now_secs() + 3600});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    #[test]
    fn aud_may_be_a_string_or_an_array_and_passes_when_any_element_matches() {
        let unconfigured = verifier(&settings());
        let mut s = settings();
        s.audience = "switchboard".into();
        let configured = verifier(&s);
        use serde_json::json;
        // (aud, passes with no audience configured, passes with "switchboard" configured)
        let table = [
            (json!("switchboard"), true, true),
            (json!("reporting"), true, false),
            (json!(["switchboard", "reporting"]), true, true),
            (json!(["reporting", "switchboard"]), true, true),
            (json!(["switchboard"]), true, true),
            (json!(["reporting", "billing"]), true, false),
            (json!([]), true, false),
        ];
        for (aud, open, closed) in table {
            let t = signed(claims_with(json!({ "aud": aud })));
            assert_eq!(
                unconfigured.verify(&t).is_ok(),
                open,
                "aud {aud} with no audience configured"
            );
            assert_eq!(
                configured.verify(&t).is_ok(),
                closed,
                "aud {aud} with audience switchboard"
            );
        }
    }

    #[test]
    fn numeric_dates_may_be_fractional() {
        use serde_json::json;
        let v = verifier(&settings());
        let now = now_secs() as f64;
        let p = v
            .verify(&signed(claims_with(
                json!({"exp": now + 3600.5, "iat": now - 0.25, "nbf": now - 10.75}),
            )))
            .expect("fractional exp, iat and nbf are NumericDates");
        assert_eq!(p.exp, now as u64 + 3600, "a fractional exp is rounded down");
        assert_eq!(
            v.verify(&signed(claims_with(json!({"exp": now - 3600.5}))))
                .unwrap_err(),
            AuthError::Expired
        );
        assert!(
            v.verify(&signed(claims_with(json!({"nbf": now + 3600.5})))).is_err(),
            "a fractional nbf in the future is refused"
        );
    }

    #[test]
    fn malformed_numeric_dates_are_refused() {
        use serde_json::json;
        let v = verifier(&settings());
        for exp in [
            json!(-1),
            json!(-0.5),
            json!("1767225600"),
            json!(null),
            json!([1767225600]),
        ] {
            assert!(
                v.verify(&signed(claims_with(json!({ "exp": exp })))).is_err(),
                "exp {exp}"
            );
        }
    }

    #[test]
    fn numeric_date_reads_integers_and_rounds_fractions_down() {
        #[derive(Deserialize)]
        struct D {
            #[serde(deserialize_with = "numeric_date")]
            t: u64,
        }
        let read = |json: &str| serde_json::from_str::<D>(json).map(|d| d.t).ok();
        let table = [
            (r#"{"t": 0}"#, Some(0)),
            (r#"{"t": 1767225600}"#, Some(1_767_225_600)),
            (r#"{"t": 1767225600.5}"#, Some(1_767_225_600)),
            (r#"{"t": 1767225600.999}"#, Some(1_767_225_600)),
            (r#"{"t": 1.7672256e9}"#, Some(1_767_225_600)),
            (r#"{"t": 18446744073709551615}"#, Some(u64::MAX)),
            (r#"{"t": -1}"#, None),
            (r#"{"t": -0.5}"#, None),
            (r#"{"t": 1e300}"#, None),
            (r#"{"t": "1"}"#, None),
            (r#"{"t": true}"#, None),
        ];
        for (json, want) in table {
            assert_eq!(read(json), want, "{json}");
        }
    }

    #[test]
    fn an_audience_reads_from_a_string_or_an_array_and_a_single_one_is_written_as_a_string() {
        use serde_json::json;
        let one = Audience::One("switchboard".into());
        let many = Audience::Many(vec!["switchboard".into(), "reporting".into()]);
        assert_eq!(serde_json::from_value::<Audience>(json!("switchboard")).unwrap(), one);
        assert_eq!(
            serde_json::from_value::<Audience>(json!(["switchboard", "reporting"])).unwrap(),
            many
        );
        assert!(serde_json::from_value::<Audience>(json!(5)).is_err());
        assert_eq!(
            serde_json::to_value(&one).unwrap(),
            json!("switchboard"),
            "what minted tokens carry"
        );
        assert_eq!(
            serde_json::to_value(&many).unwrap(),
            json!(["switchboard", "reporting"])
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

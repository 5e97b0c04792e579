//! Bearer JWTs from an external identity provider (OIDC), accepted beside the server's own
//! tokens when a verification key is configured.
//!
//! Guarantees: a JWT is accepted only with a signature that verifies against a configured public
//! key (a PEM file: RSA, EC or Ed25519; or a JWKS file, keys chosen by `kid`), with an algorithm
//! of that key's family — never `none`, never an HMAC secret, so a public key cannot be replayed as
//! a shared secret. It must carry `sub`, an unexpired `exp` (60 s leeway) and the configured `aud`
//! (and `iss`, when one is configured). Its role comes from one claim (`reader`, `policy`,
//! `partner`, `admin`) and, for partners, its partner id from another; a JWT without them is
//! refused, never downgraded. The principal's id is `jwt:<sub>`, which provenance records.

use crate::auth::{Principal, Role, TokenId};
use crate::errors::{ApiError, ErrorKind};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::path::Path;

/// How JWTs are checked and mapped to principals.
#[derive(Debug, Clone)]
pub struct JwtSettings {
    /// The `aud` every JWT must carry.
    pub audience: String,
    /// The `iss` every JWT must carry, if set.
    pub issuer: Option<String>,
    /// The claim holding the role.
    pub role_claim: String,
    /// The claim holding the partner id (role `partner`).
    pub partner_claim: String,
}

impl Default for JwtSettings {
    fn default() -> Self {
        JwtSettings {
            audience: "coalition".into(),
            issuer: None,
            role_claim: "role".into(),
            partner_claim: "partner".into(),
        }
    }
}

/// One verification key and the algorithms it may verify.
struct Key {
    kid: Option<String>,
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

/// Verifies bearer JWTs against the configured keys.
pub struct JwtVerifier {
    keys: Vec<Key>,
    settings: JwtSettings,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier").field("keys", &self.keys.len()).field("settings", &self.settings).finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("JWT key file {path}: {message}")]
pub struct KeyError {
    path: String,
    message: String,
}

const RSA: &[Algorithm] =
    &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384, Algorithm::PS512];

impl JwtVerifier {
    /// Reads the keys from `path`: a PEM public key, or a JWKS (`{"keys": […]}`) or single JWK.
    pub fn from_file(path: &Path, settings: JwtSettings) -> Result<JwtVerifier, KeyError> {
        let error = |message: String| KeyError { path: path.display().to_string(), message };
        let bytes = std::fs::read(path).map_err(|e| error(e.to_string()))?;
        JwtVerifier::from_bytes(&bytes, settings).map_err(error)
    }

    pub fn from_bytes(bytes: &[u8], settings: JwtSettings) -> Result<JwtVerifier, String> {
        let keys = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            vec![pem_key(bytes)?]
        } else {
            let set = match serde_json::from_slice::<JwkSet>(bytes) {
                Ok(set) => set,
                Err(_) => JwkSet {
                    keys: vec![serde_json::from_slice::<Jwk>(bytes)
                        .map_err(|e| format!("neither a PEM public key nor a JWKS: {e}"))?],
                },
            };
            set.keys.iter().map(jwk_key).collect::<Result<Vec<_>, _>>()?
        };
        if keys.is_empty() {
            return Err("no keys".into());
        }
        Ok(JwtVerifier { keys, settings })
    }

    /// The principal a presented JWT stands for, or why it is refused.
    pub fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let refused = |why: String| ApiError::new(ErrorKind::Unauthenticated, format!("invalid bearer JWT: {why}"));
        let header = jsonwebtoken::decode_header(token).map_err(|e| refused(format!("cannot read its header: {e}")))?;
        let candidates: Vec<&Key> = self
            .keys
            .iter()
            .filter(|k| k.algorithms.contains(&header.alg))
            .filter(|k| header.kid.is_none() || k.kid.is_none() || k.kid == header.kid)
            .collect();
        if candidates.is_empty() {
            return Err(refused(format!(
                "no configured key verifies algorithm {:?}{}",
                header.alg,
                header.kid.as_deref().map(|k| format!(" with kid \"{k}\"")).unwrap_or_default()
            )));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[&self.settings.audience]);
        let mut required = vec!["exp", "sub", "aud"];
        if let Some(issuer) = &self.settings.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let mut last = None;
        for key in candidates {
            match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key.key, &validation) {
                Ok(data) => return self.principal(&data.claims).map_err(refused),
                Err(e) => last = Some(e),
            }
        }
        Err(refused(last.map(describe).unwrap_or_default()))
    }

    fn principal(&self, claims: &serde_json::Map<String, serde_json::Value>) -> Result<Principal, String> {
        let sub = claims.get("sub").and_then(|v| v.as_str()).ok_or("claim \"sub\" is not a string")?;
        let text = |name: &str| claims.get(name).and_then(|v| v.as_str());
        let role_claim = &self.settings.role_claim;
        let role: Role = text(role_claim)
            .ok_or_else(|| format!("no role: claim \"{role_claim}\" must be reader, policy, partner or admin"))?
            .parse()
            .map_err(|e: crate::auth::AuthError| format!("claim \"{role_claim}\": {e}"))?;
        let partner = match role {
            Role::Partner => {
                let claim = &self.settings.partner_claim;
                let partner = text(claim).ok_or_else(|| format!("role partner needs claim \"{claim}\""))?;
                crate::read::check_id(claim, partner).map_err(|e| e.message)?;
                Some(coalition_events::PartnerId(partner.to_owned()))
            }
            _ => None,
        };
        Ok(Principal::Token { id: TokenId(format!("jwt:{}", subject_id(sub))), role, partner })
    }
}

/// `sub` as it can appear in a provenance IRI: unreserved characters kept, others percent-encoded.
fn subject_id(sub: &str) -> String {
    let mut out = String::with_capacity(sub.len());
    for b in sub.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn describe(e: jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "it has expired".into(),
        K::ImmatureSignature => "it is not valid yet (nbf)".into(),
        K::InvalidSignature => "its signature does not verify".into(),
        K::InvalidAudience => "wrong audience (aud)".into(),
        K::InvalidIssuer => "wrong issuer (iss)".into(),
        K::MissingRequiredClaim(c) => format!("claim \"{c}\" is missing"),
        K::InvalidAlgorithm => "algorithm not allowed for this key".into(),
        _ => e.to_string(),
    }
}

fn pem_key(pem: &[u8]) -> Result<Key, String> {
    let (key, algorithms) = if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        (k, RSA.to_vec())
    } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        (k, vec![Algorithm::ES256, Algorithm::ES384])
    } else if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        (k, vec![Algorithm::EdDSA])
    } else {
        return Err("not an RSA, EC or Ed25519 public key in PEM".into());
    };
    Ok(Key { kid: None, key, algorithms })
}

fn jwk_key(jwk: &Jwk) -> Result<Key, String> {
    let family: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA.to_vec(),
        AlgorithmParameters::EllipticCurve(_) => vec![Algorithm::ES256, Algorithm::ES384],
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        AlgorithmParameters::OctetKey(_) => return Err("symmetric keys (kty \"oct\") are not accepted".into()),
        _ => return Err("unsupported key type".into()),
    };
    // A key that names its algorithm verifies that one only.
    let algorithms = match jwk.common.key_algorithm.and_then(|a| a.to_string().parse::<Algorithm>().ok()) {
        Some(alg) if family.contains(&alg) => vec![alg],
        Some(alg) => return Err(format!("key algorithm {alg:?} does not match its key type")),
        None => family,
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {:?}: {e}", jwk.common.key_id))?;
    Ok(Key { kid: jwk.common.key_id.clone(), key, algorithms })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn ed_token(private: &str, claims: serde_json::Value) -> String {
        let key = EncodingKey::from_ed_pem(&fixture(private)).unwrap();
        encode(&Header::new(Algorithm::EdDSA), &claims, &key).unwrap()
    }

    fn verifier() -> JwtVerifier {
        JwtVerifier::from_bytes(&fixture("ed25519-public.pem"), JwtSettings::default()).unwrap()
    }

    fn claims(role: &str) -> serde_json::Value {
        json!({ "sub": "user|42", "aud": "coalition", "exp": now() + 600, "role": role, "partner": "nachw" })
    }

    #[test]
    fn a_valid_jwt_maps_its_claims_to_a_principal() {
        let p = verifier().verify(&ed_token("ed25519-private.pem", claims("partner"))).unwrap();
        assert_eq!(
            p,
            Principal::Token {
                id: TokenId("jwt:user%7C42".into()),
                role: Role::Partner,
                partner: Some("nachw".into())
            }
        );
        let p = verifier().verify(&ed_token("ed25519-private.pem", claims("reader"))).unwrap();
        assert_eq!(p.role(), Some(Role::Reader));
    }

    #[test]
    fn expired_badly_signed_and_misaddressed_jwts_are_refused() {
        let v = verifier();
        let message = |token: String| {
            let e = v.verify(&token).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Unauthenticated);
            e.message
        };
        let mut expired = claims("reader");
        expired["exp"] = json!(now() - 3600);
        assert!(message(ed_token("ed25519-private.pem", expired)).contains("expired"));
        assert!(message(ed_token("ed25519-other-private.pem", claims("reader"))).contains("signature does not verify"));
        let mut elsewhere = claims("reader");
        elsewhere["aud"] = json!("another-service");
        assert!(message(ed_token("ed25519-private.pem", elsewhere)).contains("wrong audience"));
        let mut no_aud = claims("reader");
        no_aud.as_object_mut().unwrap().remove("aud");
        assert!(message(ed_token("ed25519-private.pem", no_aud)).contains("\"aud\" is missing"));
        // Claims that map to no principal are refused, not downgraded.
        assert!(message(ed_token("ed25519-private.pem", claims("superuser"))).contains("unknown role"));
        let mut no_partner = claims("partner");
        no_partner.as_object_mut().unwrap().remove("partner");
        assert!(message(ed_token("ed25519-private.pem", no_partner)).contains("needs claim \"partner\""));
        // The public key used as an HMAC secret (algorithm confusion) verifies nothing.
        let hmac = encode(
            &Header::new(Algorithm::HS256),
            &claims("admin"),
            &EncodingKey::from_secret(&fixture("ed25519-public.pem")),
        )
        .unwrap();
        assert!(message(hmac).contains("no configured key verifies algorithm HS256"));
        assert!(message("not.a.jwt".into()).contains("cannot read its header"));
    }

    #[test]
    fn an_issuer_is_checked_when_configured() {
        let settings = JwtSettings { issuer: Some("https://id.example.org".into()), ..JwtSettings::default() };
        let v = JwtVerifier::from_bytes(&fixture("ed25519-public.pem"), settings).unwrap();
        let mut c = claims("reader");
        assert!(v.verify(&ed_token("ed25519-private.pem", c.clone())).unwrap_err().message.contains("\"iss\""));
        c["iss"] = json!("https://other.example.org");
        assert!(v.verify(&ed_token("ed25519-private.pem", c.clone())).unwrap_err().message.contains("wrong issuer"));
        c["iss"] = json!("https://id.example.org");
        assert!(v.verify(&ed_token("ed25519-private.pem", c)).is_ok());
    }

    #[test]
    fn jwks_keys_are_chosen_by_kid() {
        let v = JwtVerifier::from_bytes(&fixture("jwks.json"), JwtSettings::default()).unwrap();
        let key = EncodingKey::from_ec_pem(&fixture("p256-private.pem")).unwrap();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("p256-1".into());
        let token = encode(&header, &claims("policy"), &key).unwrap();
        assert_eq!(v.verify(&token).unwrap().role(), Some(Role::Policy));
        header.kid = Some("unknown".into());
        let token = encode(&header, &claims("policy"), &key).unwrap();
        assert!(v.verify(&token).unwrap_err().message.contains("kid \"unknown\""));
        assert!(JwtVerifier::from_bytes(br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#, JwtSettings::default())
            .unwrap_err()
            .contains("symmetric"));
    }
}

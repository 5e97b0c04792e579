//! Who is calling, and what they may do: bearer tokens, roles, and the [`Principal`] each request
//! runs as.
//!
//! Guarantees: a token is 32 random bytes shown once, at creation; only its SHA-256 hash is kept,
//! in `<data-dir>/tokens.json`, which is replaced atomically (temp file + rename) so a crash never
//! leaves it half-written. The file is re-read when it changes, so a token created or revoked with
//! `coalition token …` takes effect on a running server at its next request. Authentication and
//! authorisation run before any input validation, so a caller without the right role learns
//! nothing from field errors. A secret is never logged or stored.
//!
//! Roles: `reader` reads; `partner` reads and submits as its own partner only; `policy` reads and
//! links recommendations; `admin` does everything. Anonymous callers read when reads are public.
//! Bearer JWTs from an identity provider map to the same principals ([`crate::jwt`]), when a key
//! is configured.

use crate::errors::{ApiError, ErrorKind};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use coalition_events::PartnerId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The file, under the data directory, that holds the token hashes.
pub const TOKENS_FILE: &str = "tokens.json";
/// Every token starts with this, so a leaked one is easy to recognise (and to scan for).
const TOKEN_PREFIX: &str = "coal_";
const SECRET_BYTES: usize = 32;
const ID_BYTES: usize = 6;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads (the Advisory Group).
    Reader,
    /// Reads and links recommendations to case studies and activities.
    Policy,
    /// Reads and submits as one partner organisation.
    Partner,
    /// Everything, as any partner.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Policy => "policy",
            Role::Partner => "partner",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Role {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reader" => Ok(Role::Reader),
            "policy" => Ok(Role::Policy),
            "partner" => Ok(Role::Partner),
            "admin" => Ok(Role::Admin),
            other => {
                Err(AuthError::Invalid(format!("unknown role \"{other}\": expected reader, policy, partner or admin")))
            }
        }
    }
}

/// The public id of a token (e.g. `t3f9a0c12b7e4`): safe to log, print and record in provenance.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenId(pub String);

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// One issued token, as stored: never the secret, only its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    pub id: TokenId,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner: Option<PartnerId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Hex SHA-256 of the whole token string.
    pub sha256: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl TokenRecord {
    /// "active", "revoked" or "expired" at `now`.
    pub fn status(&self, now: DateTime<Utc>) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|t| t <= now) {
            "expired"
        } else {
            "active"
        }
    }
}

/// A token's secret, shown once. Not `Debug`/`Display` so it cannot end up in a log by accident.
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFile {
    version: u32,
    tokens: Vec<TokenRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("token file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("token file {path} is not valid: {source}")]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("no randomness available: {0}")]
    Random(String),
    #[error("no token \"{0}\"")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
}

/// Why a presented bearer token was refused. The message names the reason; it never contains the
/// secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("invalid bearer token: not a coalition token (expected coal_<id>_<secret>)")]
    Malformed,
    #[error("invalid bearer token: not issued by this server")]
    Unknown,
    #[error("bearer token {0} was revoked at {1}")]
    Revoked(TokenId, String),
    #[error("bearer token {0} expired at {1}")]
    Expired(TokenId, String),
    #[error("cannot check bearer tokens: {0}")]
    Unavailable(String),
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        match r {
            Rejection::Unavailable(_) => ApiError::new(ErrorKind::Unavailable, r.to_string()),
            other => ApiError::new(ErrorKind::Unauthenticated, other.to_string()),
        }
    }
}

/// (modification time, length) of the file when it was last read.
type Stamp = Option<(SystemTime, u64)>;

#[derive(Debug, Default)]
struct Cache {
    stamp: Stamp,
    tokens: Arc<Vec<TokenRecord>>,
}

/// The issued tokens, kept in `<data-dir>/tokens.json`.
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    cache: Mutex<Cache>,
}

impl TokenStore {
    /// The store of `data_dir` (the file need not exist yet).
    pub fn open(data_dir: &Path) -> Result<TokenStore, AuthError> {
        let store = TokenStore { path: data_dir.join(TOKENS_FILE), cache: Mutex::new(Cache::default()) };
        store.current()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn stamp(&self) -> Result<Stamp, AuthError> {
        match std::fs::metadata(&self.path) {
            Ok(m) => Ok(Some((m.modified().map_err(|e| self.io(e))?, m.len()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(e)),
        }
    }

    fn io(&self, source: std::io::Error) -> AuthError {
        AuthError::Io { path: self.path.clone(), source }
    }

    fn read_file(&self) -> Result<TokenFile, AuthError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| AuthError::Corrupt { path: self.path.clone(), source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenFile { version: 1, tokens: Vec::new() }),
            Err(e) => Err(self.io(e)),
        }
    }

    /// The tokens as the file holds them now, re-read only when the file changed.
    fn current(&self) -> Result<Arc<Vec<TokenRecord>>, AuthError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let stamp = self.stamp()?;
        if stamp != cache.stamp || (stamp.is_none() && !cache.tokens.is_empty()) {
            cache.tokens = Arc::new(self.read_file()?.tokens);
            cache.stamp = stamp;
        }
        Ok(cache.tokens.clone())
    }

    /// Reads, changes and atomically rewrites the file, under the in-process lock.
    fn update<T>(&self, f: impl FnOnce(&mut Vec<TokenRecord>) -> Result<T, AuthError>) -> Result<T, AuthError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let mut file = self.read_file()?;
        let out = f(&mut file.tokens)?;
        file.version = 1;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        let tmp = dir.join(format!(".{TOKENS_FILE}.{}.tmp", std::process::id()));
        let json = serde_json::to_vec_pretty(&file)
            .map_err(|source| AuthError::Corrupt { path: self.path.clone(), source })?;
        write_private(&tmp, &json).map_err(|e| self.io(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io(e))?;
        cache.stamp = self.stamp()?;
        cache.tokens = Arc::new(file.tokens);
        Ok(out)
    }

    /// Issues a token. `partner` is required for (and only allowed with) the partner role.
    pub fn create(
        &self,
        role: Role,
        partner: Option<PartnerId>,
        expires_at: Option<DateTime<Utc>>,
        label: Option<String>,
    ) -> Result<(TokenRecord, Secret), AuthError> {
        match (role, &partner) {
            (Role::Partner, None) => return Err(AuthError::Invalid("a partner token needs --partner <id>".into())),
            (Role::Partner, Some(p)) => {
                crate::read::check_id("partner", &p.0).map_err(|e| AuthError::Invalid(e.message))?
            }
            (_, Some(_)) => {
                return Err(AuthError::Invalid(format!("a {role} token is not bound to a partner: drop --partner")))
            }
            (_, None) => {}
        }
        let now = Utc::now();
        if expires_at.is_some_and(|t| t <= now) {
            return Err(AuthError::Invalid("the expiry is in the past".into()));
        }
        self.update(|tokens| {
            let id = loop {
                let id = TokenId(format!("t{}", hex::encode(random_bytes::<ID_BYTES>()?)));
                if !tokens.iter().any(|t| t.id == id) {
                    break id;
                }
            };
            let secret = Secret(format!("{TOKEN_PREFIX}{id}_{}", hex::encode(random_bytes::<SECRET_BYTES>()?)));
            let record = TokenRecord {
                id,
                role,
                partner,
                label,
                sha256: hash(secret.expose()),
                created_at: now,
                expires_at,
                revoked_at: None,
            };
            tokens.push(record.clone());
            Ok((record, secret))
        })
    }

    /// Every token ever issued, revoked and expired ones included.
    pub fn list(&self) -> Result<Vec<TokenRecord>, AuthError> {
        Ok(self.current()?.as_ref().clone())
    }

    pub fn is_empty(&self) -> Result<bool, AuthError> {
        Ok(self.current()?.is_empty())
    }

    /// Revokes a token by its public id. Revoking twice keeps the first time.
    pub fn revoke(&self, id: &str) -> Result<TokenRecord, AuthError> {
        self.update(|tokens| {
            let t = tokens.iter_mut().find(|t| t.id.0 == id).ok_or_else(|| AuthError::NotFound(id.to_owned()))?;
            t.revoked_at.get_or_insert_with(Utc::now);
            Ok(t.clone())
        })
    }

    /// The principal a presented token stands for at `now`, or why it is refused.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Principal, Rejection> {
        let id = token
            .strip_prefix(TOKEN_PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .map(|(id, _)| id)
            .ok_or(Rejection::Malformed)?;
        let tokens = self.current().map_err(|e| Rejection::Unavailable(e.to_string()))?;
        let record = tokens.iter().find(|t| t.id.0 == id).ok_or(Rejection::Unknown)?;
        if !constant_time_eq(record.sha256.as_bytes(), hash(token).as_bytes()) {
            return Err(Rejection::Unknown);
        }
        if let Some(at) = record.revoked_at {
            return Err(Rejection::Revoked(record.id.clone(), at.to_rfc3339()));
        }
        if let Some(at) = record.expires_at.filter(|t| *t <= now) {
            return Err(Rejection::Expired(record.id.clone(), at.to_rfc3339()));
        }
        Ok(Principal::Token { id: record.id.clone(), role: record.role, partner: record.partner.clone() })
    }
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random_bytes<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(buf)
}

/// Writes a file readable by its owner only (hashes are not secrets, but there is no reason to share them).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Parses a lifetime such as `30d`, `12h`, `90m`, `2w` or `3600s`.
pub fn parse_lifetime(s: &str) -> Result<chrono::Duration, AuthError> {
    let s = s.trim();
    let invalid = || {
        AuthError::Invalid(format!("invalid lifetime \"{s}\": expected a number and a unit, e.g. 30d, 12h, 90m, 2w"))
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().map_err(|_| invalid())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(invalid()),
    };
    if n <= 0 || n > 100 * 365 * 86_400 / secs {
        return Err(invalid());
    }
    Ok(chrono::Duration::seconds(n * secs))
}

/// Who a request runs as.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Principal {
    /// No `Authorization` header.
    #[default]
    Anonymous,
    /// A verified bearer token.
    Token { id: TokenId, role: Role, partner: Option<PartnerId> },
}

impl Principal {
    pub fn role(&self) -> Option<Role> {
        match self {
            Principal::Anonymous => None,
            Principal::Token { role, .. } => Some(*role),
        }
    }

    pub fn token_id(&self) -> Option<&TokenId> {
        match self {
            Principal::Anonymous => None,
            Principal::Token { id, .. } => Some(id),
        }
    }

    /// Anyone authenticated reads; anonymous callers read when reads are public.
    pub fn authorize_read(&self, public_reads: bool) -> Result<(), ApiError> {
        match self {
            Principal::Anonymous if !public_reads => {
                Err(unauthenticated("reads need a bearer token on this server (Authorization: Bearer <token>)"))
            }
            _ => Ok(()),
        }
    }

    /// May this principal write anything at all? Everyone but anonymous callers and readers.
    pub fn authorize_writer(&self) -> Result<(), ApiError> {
        match self {
            Principal::Anonymous => {
                Err(unauthenticated("mutations need a bearer token (Authorization: Bearer <token>)"))
            }
            Principal::Token { role: Role::Reader, id, .. } => Err(ApiError::new(
                ErrorKind::Forbidden,
                format!("token {id} has role reader, which cannot run mutations"),
            )),
            Principal::Token { .. } => Ok(()),
        }
    }

    /// May this principal submit at all (as some partner)? Partner and admin tokens only.
    pub fn authorize_submitter(&self) -> Result<(), ApiError> {
        match self {
            Principal::Anonymous => {
                Err(unauthenticated("submitting needs a partner token (Authorization: Bearer <token>)"))
            }
            Principal::Token { role: Role::Partner | Role::Admin, .. } => Ok(()),
            Principal::Token { role, id, .. } => Err(ApiError::new(
                ErrorKind::Forbidden,
                format!("token {id} has role {role}: submitting needs role partner"),
            )),
        }
    }

    /// May this principal submit (or change) entities as `partner`? Partners only as themselves;
    /// admins as anyone.
    pub fn authorize_submit(&self, partner: &str) -> Result<(), ApiError> {
        self.authorize_submitter()?;
        match self {
            Principal::Token { role: Role::Partner, partner: own, id }
                if own.as_ref().is_none_or(|own| own.0 != partner) =>
            {
                let own = own.as_ref().map(|p| p.0.as_str()).unwrap_or("");
                Err(ApiError::new(
                    ErrorKind::Forbidden,
                    format!("token {id} belongs to partner \"{own}\" and cannot submit as partner \"{partner}\""),
                ))
            }
            _ => Ok(()),
        }
    }

    /// May this principal link recommendations? Policy and admin only.
    pub fn authorize_link(&self) -> Result<(), ApiError> {
        match self {
            Principal::Anonymous => {
                Err(unauthenticated("linking needs a policy token (Authorization: Bearer <token>)"))
            }
            Principal::Token { role: Role::Policy | Role::Admin, .. } => Ok(()),
            Principal::Token { role, id, .. } => Err(ApiError::new(
                ErrorKind::Forbidden,
                format!("token {id} has role {role}: linking recommendations needs role policy"),
            )),
        }
    }

    /// May this principal run operations on the server (rebuild)? Admin only.
    pub fn authorize_admin(&self) -> Result<(), ApiError> {
        match self {
            Principal::Anonymous => {
                Err(unauthenticated("operations need an admin token (Authorization: Bearer <token>)"))
            }
            Principal::Token { role: Role::Admin, .. } => Ok(()),
            Principal::Token { role, id, .. } => Err(ApiError::new(
                ErrorKind::Forbidden,
                format!("token {id} has role {role}: operations need role admin"),
            )),
        }
    }

    /// The CloudEvents `source` of an event this principal produces for `partner`: the
    /// authenticated token, never a client-supplied claim.
    pub fn event_source(&self, partner: &str) -> String {
        match self.token_id() {
            Some(id) => format!("/partners/{partner}/principals/{id}"),
            None => format!("/partners/{partner}"),
        }
    }
}

fn unauthenticated(message: &str) -> ApiError {
    ApiError::new(ErrorKind::Unauthenticated, message)
}

/// What the authentication layer found: a principal, or why the presented credentials are refused.
#[derive(Debug, Clone)]
pub struct Authentication(pub Result<Principal, ApiError>);

/// The `Authorization` header's principal. A request with no header is anonymous; one with a bad,
/// revoked or expired token (or JWT) is refused with 401 here, on every route, before any handler
/// runs.
pub async fn authenticate(State(state): State<crate::AppState>, mut request: Request, next: Next) -> Response {
    let header = request.headers().get(header::AUTHORIZATION).cloned();
    let result = match header {
        None => Ok(Principal::Anonymous),
        Some(value) => resolve(&state, value).await,
    };
    match result {
        Ok(principal) => {
            if let Principal::Token { id, role, .. } = &principal {
                tracing::Span::current().record("principal", tracing::field::display(id));
                tracing::debug!(token = %id, %role, "authenticated");
            }
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(e) => {
            let graphql = request.uri().path() == "/graphql";
            if graphql {
                crate::graphql::refusal(e)
            } else {
                e.into_response()
            }
        }
    }
}

async fn resolve(state: &crate::AppState, value: HeaderValue) -> Result<Principal, ApiError> {
    let value = value.to_str().map_err(|_| unauthenticated("invalid Authorization header: not ASCII"))?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(unauthenticated("invalid Authorization header: expected \"Bearer <token>\""));
    }
    let token = token.trim().to_owned();
    // A JWT (three dot-separated parts) goes to the identity provider's keys, when configured;
    // the server's own tokens never contain a dot.
    if let Some(jwt) = &state.config.jwt {
        if !token.starts_with(TOKEN_PREFIX) && token.split('.').count() == 3 {
            return jwt.verify(&token);
        }
    }
    let tokens = state.tokens.clone();
    // Verifying may re-read the token file: keep it off the async workers.
    tokio::task::spawn_blocking(move || tokens.verify(&token, Utc::now()))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Principal>().cloned().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, TokenStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn a_created_token_verifies_and_only_its_hash_is_stored() {
        let (dir, store) = store();
        let (record, secret) = store.create(Role::Partner, Some("nachw".into()), None, None).unwrap();
        assert!(secret.expose().starts_with(&format!("coal_{}_", record.id)));
        assert_eq!(secret.expose().len(), "coal_".len() + 13 + 1 + 64);
        let principal = store.verify(secret.expose(), Utc::now()).unwrap();
        assert_eq!(
            principal,
            Principal::Token { id: record.id.clone(), role: Role::Partner, partner: Some("nachw".into()) }
        );
        let file = std::fs::read_to_string(dir.path().join(TOKENS_FILE)).unwrap();
        assert!(!file.contains(secret.expose()), "the secret must not be stored");
        assert!(!file.contains(&secret.expose()[20..]), "no part of the secret is stored");
        assert!(file.contains(&hash(secret.expose())));
        // Another store over the same directory (another process) sees it.
        let other = TokenStore::open(dir.path()).unwrap();
        assert!(other.verify(secret.expose(), Utc::now()).is_ok());
    }

    #[test]
    fn wrong_revoked_and_expired_tokens_are_refused_with_their_reason() {
        let (dir, store) = store();
        let (record, secret) = store.create(Role::Reader, None, None, None).unwrap();
        let forged = format!("{}0", &secret.expose()[..secret.expose().len() - 1]);
        let forged = if forged == secret.expose() { format!("{}1", &forged[..forged.len() - 1]) } else { forged };
        assert_eq!(store.verify(&forged, Utc::now()), Err(Rejection::Unknown));
        assert_eq!(store.verify("hello", Utc::now()), Err(Rejection::Malformed));
        assert_eq!(store.verify("coal_tnope_abc", Utc::now()), Err(Rejection::Unknown));

        // Revoked through another handle on the same file: the first one notices.
        let other = TokenStore::open(dir.path()).unwrap();
        other.revoke(&record.id.0).unwrap();
        assert!(matches!(store.verify(secret.expose(), Utc::now()), Err(Rejection::Revoked(id, _)) if id == record.id));
        assert!(matches!(other.revoke("tmissing"), Err(AuthError::NotFound(_))));

        let expires = Utc::now() + chrono::Duration::hours(1);
        let (record, secret) = store.create(Role::Policy, None, Some(expires), None).unwrap();
        assert!(store.verify(secret.expose(), Utc::now()).is_ok());
        let later = expires + chrono::Duration::seconds(1);
        let refused = store.verify(secret.expose(), later).unwrap_err();
        assert!(matches!(&refused, Rejection::Expired(id, _) if *id == record.id));
        assert!(refused.to_string().contains("expired at"), "{refused}");
        assert_eq!(store.list().unwrap().iter().map(|t| t.status(later)).collect::<Vec<_>>(), ["revoked", "expired"]);
    }

    #[test]
    fn roles_and_partners_are_checked_at_creation() {
        let (_dir, store) = store();
        assert!(store.create(Role::Partner, None, None, None).is_err());
        assert!(store.create(Role::Partner, Some("Not An Id".into()), None, None).is_err());
        assert!(store.create(Role::Policy, Some("nachw".into()), None, None).is_err());
        assert!(store.create(Role::Admin, None, Some(Utc::now() - chrono::Duration::seconds(1)), None).is_err());
        assert!(store.is_empty().unwrap());
        assert_eq!("policy".parse::<Role>().unwrap(), Role::Policy);
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn lifetimes_parse() {
        assert_eq!(parse_lifetime("30d").unwrap(), chrono::Duration::days(30));
        assert_eq!(parse_lifetime("12h").unwrap(), chrono::Duration::hours(12));
        assert_eq!(parse_lifetime("2w").unwrap(), chrono::Duration::weeks(2));
        for bad in ["", "d", "30", "30x", "-1d", "0d", "99999999999d"] {
            assert!(parse_lifetime(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn authorisation_by_role_and_partner() {
        let partner = Principal::Token { id: TokenId("t1".into()), role: Role::Partner, partner: Some("nachw".into()) };
        let policy = Principal::Token { id: TokenId("t2".into()), role: Role::Policy, partner: None };
        let reader = Principal::Token { id: TokenId("t3".into()), role: Role::Reader, partner: None };
        let admin = Principal::Token { id: TokenId("t4".into()), role: Role::Admin, partner: None };
        let kind = |r: Result<(), ApiError>| r.err().map(|e| e.kind);
        assert_eq!(kind(Principal::Anonymous.authorize_submit("nachw")), Some(ErrorKind::Unauthenticated));
        assert_eq!(kind(partner.authorize_submit("nachw")), None);
        assert_eq!(kind(partner.authorize_submit("sanofi")), Some(ErrorKind::Forbidden));
        assert_eq!(kind(reader.authorize_submit("nachw")), Some(ErrorKind::Forbidden));
        assert_eq!(kind(policy.authorize_submit("nachw")), Some(ErrorKind::Forbidden));
        assert_eq!(kind(admin.authorize_submit("sanofi")), None);
        assert_eq!(kind(policy.authorize_link()), None);
        assert_eq!(kind(admin.authorize_link()), None);
        assert_eq!(kind(partner.authorize_link()), Some(ErrorKind::Forbidden));
        assert_eq!(kind(Principal::Anonymous.authorize_link()), Some(ErrorKind::Unauthenticated));
        assert_eq!(kind(Principal::Anonymous.authorize_read(true)), None);
        assert_eq!(kind(Principal::Anonymous.authorize_read(false)), Some(ErrorKind::Unauthenticated));
        assert_eq!(kind(reader.authorize_read(false)), None);
        assert_eq!(partner.event_source("nachw"), "/partners/nachw/principals/t1");
    }
}

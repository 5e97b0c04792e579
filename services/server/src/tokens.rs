//! `coalition token create|list|revoke`: issues and revokes the bearer tokens the API accepts, in
//! `<data-dir>/tokens.json` (see `coalition_api::auth`). A running server picks changes up at its
//! next request. The secret is printed once, on stdout, and never stored.
//!
//! Also the demo tokens the embedded default issues on first start, so the README's examples work.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use coalition_api::auth::{self, Role, Secret, TokenRecord, TokenStore};
use std::path::PathBuf;

#[derive(Debug, Args, Clone)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
    /// Where tokens.json lives (the server's data directory).
    #[arg(long, env = "COALITION_DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,
}

#[derive(Debug, Subcommand, Clone)]
pub enum TokenCommand {
    /// Issue a token and print it once (stdout); only its hash is stored.
    Create {
        /// reader, policy, partner or admin.
        #[arg(long)]
        role: Role,
        /// The partner id a partner token submits as (partner role only).
        #[arg(long)]
        partner: Option<String>,
        /// Lifetime, e.g. 30d, 12h, 2w (default: no expiry).
        #[arg(long)]
        expires: Option<String>,
        /// A note for `token list`, e.g. who holds it.
        #[arg(long)]
        label: Option<String>,
    },
    /// List issued tokens (ids, roles, partners, status; never secrets).
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by its id (as shown by `token list`); takes effect at the next request.
    Revoke { id: String },
}

pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let store = TokenStore::open(&args.data_dir)?;
    match args.command {
        TokenCommand::Create { role, partner, expires, label } => {
            let expires_at = expires.as_deref().map(auth::parse_lifetime).transpose()?.map(|d| chrono::Utc::now() + d);
            let (record, secret) = store.create(role, partner.map(|p| p.as_str().into()), expires_at, label)?;
            // The secret alone on stdout, so `TOKEN=$(coalition token create …)` works.
            println!("{}", secret.expose());
            eprintln!(
                "created token {} ({}); it is shown once — keep it now. Use it as: Authorization: Bearer <token>",
                record.id,
                describe(&record)
            );
        }
        TokenCommand::List { json } => {
            let now = chrono::Utc::now();
            let tokens = store.list()?;
            if json {
                for t in &tokens {
                    let mut v = serde_json::to_value(t)?;
                    v["status"] = t.status(now).into();
                    if let Some(o) = v.as_object_mut() {
                        o.remove("sha256");
                    }
                    println!("{v}");
                }
            } else {
                println!("{:<14} {:<8} {:<28} {:<8} {:<21} label", "id", "role", "partner", "status", "expires");
                for t in &tokens {
                    println!(
                        "{:<14} {:<8} {:<28} {:<8} {:<21} {}",
                        t.id,
                        t.role,
                        t.partner.as_ref().map(|p| p.0.as_str()).unwrap_or("-"),
                        t.status(now),
                        t.expires_at
                            .map(|e| e.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                            .unwrap_or_else(|| "never".into()),
                        t.label.as_deref().unwrap_or("")
                    );
                }
            }
        }
        TokenCommand::Revoke { id } => {
            let record = store.revoke(&id)?;
            println!("revoked token {} ({})", record.id, describe(&record));
        }
    }
    Ok(())
}

fn describe(t: &TokenRecord) -> String {
    let mut s = format!("role {}", t.role);
    if let Some(p) = &t.partner {
        s.push_str(&format!(", partner {p}"));
    }
    match t.expires_at {
        Some(e) => s.push_str(&format!(", expires {}", e.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))),
        None => s.push_str(", no expiry"),
    }
    s
}

/// The partner the embedded default's demo partner token submits as (it is in the built-in dataset).
pub const DEMO_PARTNER: &str = "nachw";

/// On first start of the embedded default (no token ever issued), issues one partner token for
/// [`DEMO_PARTNER`] and one policy token, and returns the lines to print. Later starts issue none.
pub fn demo_tokens(store: &TokenStore) -> anyhow::Result<Vec<String>> {
    if !store.is_empty()? {
        return Ok(Vec::new());
    }
    let (partner, partner_secret) =
        store.create(Role::Partner, Some(DEMO_PARTNER.into()), None, Some("demo".into()))?;
    let (policy, policy_secret) = store.create(Role::Policy, None, None, Some("demo".into()))?;
    let line = |what: &str, r: &TokenRecord, s: &Secret| {
        format!("  {what:<22}Authorization: Bearer {}   (id {})", s.expose(), r.id)
    };
    Ok(vec![
        format!("  demo tokens (shown once; only their hashes are kept in {}):", store.path().display()),
        line(&format!("partner {DEMO_PARTNER}"), &partner, &partner_secret),
        line("policy", &policy, &policy_secret),
    ])
}

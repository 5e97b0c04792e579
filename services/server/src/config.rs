//! Command-line and environment configuration, in one place. Every option has a
//! `COALITION_…` environment variable and a default that works on one machine.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "coalition",
    version,
    about = "Coalition Graph: an event-streamed knowledge graph for a health-equity coalition"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run broker (embedded unless --kafka-brokers), materializer and API.
    Serve(Box<ServeArgs>),
    /// Publish a JSON Lines file of CloudEvents to Kafka.
    Import {
        path: PathBuf,
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Create missing topics first.
        #[arg(long, env = "COALITION_CREATE_TOPICS", default_value_t = false)]
        create_topics: bool,
    },
    /// Publish the built-in dataset to external Kafka.
    Seed {
        #[command(flatten)]
        kafka: KafkaArgs,
    },
    /// Write the graph (all named graphs, provenance included) as sorted N-Quads.
    Dump {
        #[arg(long, env = "COALITION_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Output file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the GraphQL schema (SDL).
    Schema,
    /// Issue, list and revoke API bearer tokens.
    Token(crate::tokens::TokenArgs),
    /// Print canonical digests of the graph (sorted N-Quads, provenance included) and the index.
    Digest {
        #[arg(long, env = "COALITION_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replay the log into fresh stores beside the live ones, then swap them in (now if no
    /// server holds the data dir, else at the server's next start).
    Rebuild {
        #[arg(long, env = "COALITION_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        #[command(flatten)]
        kafka: KafkaArgs,
    },
    /// Inspect and replay dead letters.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List the records on the dead-letter topic with their reason and source position.
    List {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[arg(long)]
        json: bool,
    },
    /// Re-submit dead letters (PARTITION/OFFSET on the dead-letter topic) to their source topics.
    Replay {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Dead letters to replay, as PARTITION/OFFSET.
        records: Vec<String>,
        /// Replay every dead letter.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Args, Clone)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers; absent = the embedded in-process broker.
    #[arg(long, env = "COALITION_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// Consumer group of this replica's materializer.
    #[arg(long, env = "COALITION_CONSUMER_GROUP", default_value = "coalition-materializer")]
    pub consumer_group: String,
    /// Extra librdkafka property, KEY=VALUE (repeatable), e.g. sasl.mechanism=SCRAM-SHA-512.
    #[arg(long = "kafka-property", env = "COALITION_KAFKA_PROPERTIES", value_delimiter = ',')]
    pub kafka_property: Vec<String>,
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "COALITION_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Where the graph store and search index live.
    #[arg(long, env = "COALITION_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Do not load the built-in dataset on first start (embedded broker).
    #[arg(long, env = "COALITION_NO_SEED", default_value_t = false)]
    pub no_seed: bool,
    /// Publish the built-in dataset at start even with external Kafka.
    #[arg(long, env = "COALITION_SEED", default_value_t = false)]
    pub seed: bool,
    /// Create missing topics on external Kafka at start.
    #[arg(long, env = "COALITION_CREATE_TOPICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub create_topics: bool,
    /// Partitions per topic when creating topics.
    #[arg(long, env = "COALITION_PARTITIONS", default_value_t = 3)]
    pub partitions: i32,
    /// Replication factor when creating topics on external Kafka.
    #[arg(long, env = "COALITION_REPLICATION", default_value_t = 1)]
    pub replication: i32,
    /// Acknowledge mutations only after the event is applied (always on with the embedded broker).
    #[arg(long, env = "COALITION_ACK_AFTER_APPLY", default_value_t = false)]
    pub ack_after_apply: bool,
    /// Most events per materializer batch.
    #[arg(long, env = "COALITION_BATCH_MAX", default_value_t = 2000)]
    pub batch_max: usize,
    /// Nice value of the materializer's threads (Linux, 0–19): above the serving threads', queries
    /// get the cores first and ingest takes the rest (10 cut the cached p99 by a third at 10k, but
    /// when something else keeps the cores busy, ingest gets a tenth of a busy thread's share and
    /// falls behind); 0 = the same priority.
    #[arg(long, env = "COALITION_INGEST_NICE", default_value_t = 0)]
    pub ingest_nice: i32,
    /// How long a batch waits for more events, in milliseconds.
    #[arg(long, env = "COALITION_LINGER_MS", default_value_t = 20)]
    pub linger_ms: u64,
    /// When the stores hold nothing and the log at least this many records (a new replica, a
    /// rebuild), bulk-load the log up to its end at start before streaming; 0 turns it off.
    #[arg(long, env = "COALITION_INITIAL_LOAD_MIN", default_value_t = crate::stores::INITIAL_LOAD_MIN)]
    pub initial_load_min: u64,
    /// SPARQL query timeout in seconds.
    #[arg(long, env = "COALITION_SPARQL_TIMEOUT_S", default_value_t = 10)]
    pub sparql_timeout_s: u64,
    /// Let anonymous callers read (GraphQL queries, SPARQL); writes always need a token.
    #[arg(long, env = "COALITION_PUBLIC_READS", default_value_t = true, action = clap::ArgAction::Set)]
    pub public_reads: bool,
    /// GraphQL requests per second per token (burst 2×; anonymous callers share 5×); 0 = no limit.
    #[arg(long, env = "COALITION_GRAPHQL_RATE_LIMIT", default_value_t = coalition_api::ratelimit::DEFAULT_PER_TOKEN_PER_SECOND)]
    pub graphql_rate_limit: f64,
    /// Microseconds a GraphQL batch loader collects keys before reading the store: longer merges
    /// concurrent requests' lookups, shorter answers a lone request sooner.
    #[arg(long, env = "COALITION_GRAPHQL_BATCH_DELAY_US", default_value_t = coalition_api::DEFAULT_GRAPHQL_BATCH_DELAY_US)]
    pub graphql_batch_delay_us: u64,
    /// MiB of answers to GraphQL queries and SPARQL kept until the data next changes (a request
    /// with `Cache-Control: no-cache` is always computed afresh); 0 = keep none.
    #[arg(long, env = "COALITION_RESPONSE_CACHE_MIB", default_value_t = coalition_api::response_cache::DEFAULT_MAX_MIB)]
    pub response_cache_mib: usize,
    /// Milliseconds after its state was last seen current that a question's answer of an earlier
    /// state may still be served to a request without a consistency token or `as-of`, while the
    /// question is being computed (`Coalition-Cache: stale`); 0 = never.
    #[arg(long, env = "COALITION_RESPONSE_CACHE_STALE_MS", default_value_t = coalition_api::response_cache::DEFAULT_MAX_STALE_MS)]
    pub response_cache_stale_ms: u64,
    /// Answer GraphQL introspection queries (GraphiQL's schema explorer needs them).
    #[arg(long, env = "COALITION_GRAPHQL_INTROSPECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub graphql_introspection: bool,
    /// Also accept bearer JWTs (OIDC) signed by this key: a PEM public key (RSA, EC or Ed25519)
    /// or a JWKS file. Read at start.
    #[arg(long, env = "COALITION_JWT_KEY")]
    pub jwt_key: Option<PathBuf>,
    /// The audience (`aud`) a JWT must carry.
    #[arg(long, env = "COALITION_JWT_AUDIENCE", default_value = "coalition")]
    pub jwt_audience: String,
    /// The issuer (`iss`) a JWT must carry; any issuer when unset.
    #[arg(long, env = "COALITION_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// The JWT claim holding the role: reader, policy, partner or admin.
    #[arg(long, env = "COALITION_JWT_ROLE_CLAIM", default_value = "role")]
    pub jwt_role_claim: String,
    /// The JWT claim holding the partner id of a partner.
    #[arg(long, env = "COALITION_JWT_PARTNER_CLAIM", default_value = "partner")]
    pub jwt_partner_claim: String,
}

//! `coalition`: the Coalition Graph binary. `serve` runs broker (embedded, unless
//! `--kafka-brokers` names real Kafka), materializer and API; `import` publishes event files;
//! `dump` writes the graph as N-Quads; `schema` prints the GraphQL SDL.
//!
//! Shutdown: Ctrl-C (or SIGTERM) stops accepting requests, lets the materializer commit the batch
//! in flight, then exits.

mod config;
mod ops;
mod stores;
mod tokens;

use anyhow::Context as _;
use clap::Parser;
use coalition_api::{ApiConfig, ApiMetrics, AppContext, AppState};
use coalition_ingest::{EventProducer, IngestMetrics, KafkaConfig};
use coalition_store::GraphStore;
use config::{Cli, Command, DlqCommand, KafkaArgs, ServeArgs};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long open HTTP connections may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// The built-in dataset: the coalition's recommendations, case studies, dialogues and evidence,
/// as events that go through the same path as any partner's.
const SEED: &str = include_str!("../seed/coalition-seed.jsonl");

/// mimalloc instead of the system allocator: the ingest path allocates and frees millions of
/// small strings and vectors (events, terms, documents), and glibc's `_int_malloc` alone took
/// 31.6 % of the initial load's loading thread (`docs/performance.md`, "Allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rdkafka=warn,tantivy=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if let Command::Serve(args) = cli.command {
        // With `--ingest-nice`, the materializer's own threads, below the serving threads' CPU
        // priority; otherwise it shares the serving runtime.
        let ingest =
            (args.ingest_nice > 0).then(|| coalition_ingest::priority::runtime(args.ingest_nice)).transpose()?;
        // The embedded broker must outlive every task that holds a Kafka client, so it is dropped
        // only after the runtimes have shut down.
        let broker = runtime.block_on(serve(*args, ingest.as_ref().map(|r| r.handle().clone())))?;
        runtime.shutdown_timeout(Duration::from_secs(2));
        if let Some(ingest) = ingest {
            ingest.shutdown_timeout(Duration::from_secs(2));
        }
        drop(broker);
        return Ok(());
    }
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(_) => unreachable!("handled above"),
            Command::Import { path, kafka, create_topics } => import(&path, kafka, create_topics).await,
            Command::Seed { kafka } => seed(kafka).await,
            Command::Dump { data_dir, out } => dump(&data_dir, out.as_deref()),
            Command::Schema => {
                print!("{}", coalition_api::graphql::sdl());
                Ok(())
            }
            Command::Token(args) => tokens::run(args),
            Command::Digest { data_dir, json } => ops::digest(&data_dir, json),
            Command::Rebuild { data_dir, kafka } => stores::rebuild_offline(&data_dir, external_kafka(&kafka)?).await,
            Command::Dlq { command } => match command {
                DlqCommand::List { kafka, json } => {
                    let config = external_kafka(&kafka)?;
                    tokio::task::spawn_blocking(move || ops::list(&config, json)).await?
                }
                DlqCommand::Replay { kafka, records, all } => {
                    ops::replay(&external_kafka(&kafka)?, &records, all).await
                }
            },
        }
    })
}

/// A Kafka-protocol broker held for the life of the process when no external one is configured.
struct Broker {
    brokers: String,
    log_id: String,
    embedded: Option<MockCluster<'static, DefaultProducerContext>>,
}

async fn start_broker(args: &ServeArgs) -> anyhow::Result<Broker> {
    match &args.kafka.kafka_brokers {
        Some(brokers) => {
            let config = kafka_config(&args.kafka, brokers);
            if args.create_topics {
                coalition_ingest::ensure_topics(&config, args.partitions, args.replication)
                    .await
                    .context("creating topics")?;
            }
            Ok(Broker { brokers: brokers.clone(), log_id: "kafka".to_owned(), embedded: None })
        }
        None => {
            let cluster = MockCluster::new(1).context("starting the embedded broker")?;
            let mut topics = coalition_events::Kind::topics();
            topics.push(coalition_events::DEAD_LETTER_TOPIC);
            for topic in topics {
                cluster.create_topic(topic, args.partitions, 1)?;
            }
            // The embedded log lives in memory: offsets from an earlier run refer to another log.
            let log_id = format!("embedded-{}", uuid::Uuid::now_v7().simple());
            Ok(Broker { brokers: cluster.bootstrap_servers(), log_id, embedded: Some(cluster) })
        }
    }
}

/// The JWT verifier, when a key is configured.
fn jwt_verifier(args: &ServeArgs) -> anyhow::Result<Option<Arc<coalition_api::jwt::JwtVerifier>>> {
    let Some(path) = &args.jwt_key else { return Ok(None) };
    let settings = coalition_api::jwt::JwtSettings {
        audience: args.jwt_audience.clone(),
        issuer: args.jwt_issuer.clone(),
        role_claim: args.jwt_role_claim.clone(),
        partner_claim: args.jwt_partner_claim.clone(),
    };
    Ok(Some(Arc::new(coalition_api::jwt::JwtVerifier::from_file(path, settings)?)))
}

/// The Kafka configuration of a command that needs an external cluster.
fn external_kafka(args: &KafkaArgs) -> anyhow::Result<KafkaConfig> {
    let brokers =
        args.kafka_brokers.clone().context("this command needs --kafka-brokers (or COALITION_KAFKA_BROKERS)")?;
    Ok(kafka_config(args, &brokers))
}

fn kafka_config(args: &KafkaArgs, brokers: &str) -> KafkaConfig {
    let mut c = KafkaConfig::new(brokers);
    c.consumer_group = args.consumer_group.clone();
    c.extra = args
        .kafka_property
        .iter()
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    c
}

async fn serve(args: ServeArgs, ingest: Option<tokio::runtime::Handle>) -> anyhow::Result<Broker> {
    stores::prepare(&args.data_dir)?;
    let jwt = jwt_verifier(&args)?;
    let token_store =
        Arc::new(coalition_api::auth::TokenStore::open(&args.data_dir).context("opening the token store")?);
    let registry = prometheus::Registry::new();
    let ingest_metrics = IngestMetrics::register(&registry)?;
    let api_metrics = ApiMetrics::register(&registry)?;

    let broker = start_broker(&args).await?;
    let embedded = broker.embedded.is_some();
    let kafka = kafka_config(&args.kafka, &broker.brokers);
    let producer = EventProducer::new(&kafka, Some(ingest_metrics.clone()))?;
    let cancel = CancellationToken::new();
    let feed = stores::Feed {
        kafka: kafka.clone(),
        log: broker.log_id.clone(),
        dead_letters: Some(producer.clone()),
        metrics: ingest_metrics.clone(),
        batch_max: args.batch_max,
        linger: Duration::from_millis(args.linger_ms),
        initial_load_min: args.initial_load_min,
        runtime: ingest,
    };
    let live = stores::LiveStores::start(&args.data_dir, feed, cancel.child_token()).await?;
    let (store, index) = (live.store.clone(), live.index.clone());
    let fresh = live.was_empty;

    let load_seed = (embedded && fresh && !args.no_seed) || args.seed;
    if load_seed {
        let report = coalition_ingest::import_file(&producer, SEED, false).await?;
        anyhow::ensure!(report.rejected.is_empty(), "built-in dataset has invalid events: {:?}", report.rejected);
        let mut w = live.watermark();
        for r in &report.receipts {
            coalition_ingest::wait_applied(&mut w, &r.topic, r.partition, r.offset, Duration::from_secs(60)).await?;
        }
        tracing::info!(events = report.published, "built-in dataset loaded");
    }

    let state = AppState::new(AppContext {
        store,
        index,
        producer,
        watermark: live.watermark(),
        registry,
        metrics: api_metrics,
        config: ApiConfig {
            // With the in-memory embedded log, the store is the only durable copy: acknowledge
            // a mutation only once it is committed there.
            ack_after_apply: embedded || args.ack_after_apply,
            sparql_timeout: Duration::from_secs(args.sparql_timeout_s),
            public_reads: args.public_reads,
            rate_limit: coalition_api::ratelimit::RateLimit::per_token(args.graphql_rate_limit),
            graphql_batch_delay: Duration::from_micros(args.graphql_batch_delay_us),
            response_cache_bytes: args.response_cache_mib.saturating_mul(1024 * 1024),
            response_cache_max_stale: Duration::from_millis(args.response_cache_stale_ms),
            introspection: args.graphql_introspection,
            jwt,
            ..ApiConfig::default()
        },
        tokens: token_store.clone(),
        operations: Some(Arc::new(stores::Ops(live.clone()))),
    });
    let demo_tokens = if embedded { tokens::demo_tokens(&token_store)? } else { Vec::new() };
    let listener =
        tokio::net::TcpListener::bind(&args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("Coalition Graph is running ({})", if embedded { "embedded broker" } else { "external Kafka" });
    println!("  GraphQL   http://{addr}/graphql");
    println!("  SPARQL    http://{addr}/sparql");
    println!("  health    http://{addr}/healthz");
    println!("  ready     http://{addr}/readyz");
    println!("  metrics   http://{addr}/metrics");
    println!("  kafka     {}", broker.brokers);
    println!("  data dir  {}", args.data_dir.display());
    for line in demo_tokens {
        println!("{line}");
    }
    // Each response goes out as soon as it is written: without TCP_NODELAY, a response's last
    // segment can wait for the client's delayed acknowledgement of the one before.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "could not set TCP_NODELAY on a connection");
        }
    });
    let server =
        axum::serve(listener, coalition_api::app(state)).with_graceful_shutdown(cancel.clone().cancelled_owned());
    let signalled = {
        let cancel = cancel.clone();
        async move {
            wait_for_signal().await;
            tracing::info!("shutting down: draining requests");
            cancel.cancel();
            // Idle keep-alive connections must not hold the process: bound the drain.
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        }
    };
    tokio::select! {
        result = server.into_future() => result?,
        _ = signalled => tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the grace period; closing them"),
    }
    cancel.cancel();
    live.stop().await?;
    Ok(broker)
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn import(path: &std::path::Path, kafka: KafkaArgs, create_topics: bool) -> anyhow::Result<()> {
    let brokers = kafka.kafka_brokers.clone().context("import needs --kafka-brokers (or COALITION_KAFKA_BROKERS)")?;
    let config = kafka_config(&kafka, &brokers);
    if create_topics {
        coalition_ingest::ensure_topics(&config, 3, 1).await?;
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let producer = EventProducer::new(&config, None)?;
    let report = coalition_ingest::import_file(&producer, &text, true).await?;
    for (line, error) in &report.rejected {
        eprintln!("{}:{line}: {error}", path.display());
    }
    println!("published {} events, rejected {}", report.published, report.rejected.len());
    anyhow::ensure!(report.rejected.is_empty(), "{} line(s) rejected", report.rejected.len());
    Ok(())
}

async fn seed(kafka: KafkaArgs) -> anyhow::Result<()> {
    let brokers = kafka.kafka_brokers.clone().context("seed needs --kafka-brokers")?;
    let producer = EventProducer::new(&kafka_config(&kafka, &brokers), None)?;
    let report = coalition_ingest::import_file(&producer, SEED, true).await?;
    println!("published {} built-in events", report.published);
    Ok(())
}

fn dump(data_dir: &std::path::Path, out: Option<&std::path::Path>) -> anyhow::Result<()> {
    let store = GraphStore::open_read_only(&stores::live_dir(data_dir).join("graph"))
        .context("opening the graph store read-only")?;
    let n = match out {
        Some(path) => store.dump_nquads(&mut std::io::BufWriter::new(std::fs::File::create(path)?))?,
        None => store.dump_nquads(&mut std::io::stdout().lock())?,
    };
    eprintln!("dumped {n} quads");
    Ok(())
}

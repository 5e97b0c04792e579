//! Graph and index agree at every watermark: after each chunk of events is applied, the
//! text-bearing entities in the graph and the entities with documents in the index are the same
//! set — through creates, updates and retractions. Runs the real materializer against
//! librdkafka's in-process mock cluster (the end-to-end tests cover a real broker process).

use coalition_events::{Event, EventId, Kind, Payload};
use coalition_ingest::{wait_applied, EventProducer, IngestMetrics, Materializer};
use coalition_search::SearchIndex;
use coalition_store::{literal, GraphStore};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

mod common;

fn graph_entities(store: &GraphStore) -> BTreeSet<String> {
    store
        .select(&format!(
            "SELECT DISTINCT ?e WHERE {{ GRAPH ?g {{ ?e <{}> ?id }} }}",
            coalition_mapping::vocab::coal::ENTITY_ID
        ))
        .unwrap()
        .iter()
        .filter_map(|r| literal(r, "e"))
        .filter(|iri| coalition_mapping::parse_entity_iri(iri).is_some_and(|(k, _)| k != Kind::Link))
        .collect()
}

fn index_entities(index: &SearchIndex) -> BTreeSet<String> {
    index.all_iris().unwrap().into_iter().map(|(_, entity)| entity).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_and_index_agree_at_every_watermark() {
    let (_cluster, kafka) = common::cluster();
    let producer = EventProducer::new(&kafka, None).unwrap();
    let store = GraphStore::in_memory().unwrap();
    let index = Arc::new(SearchIndex::in_memory().unwrap());
    let cancel = CancellationToken::new();
    let handle = Materializer {
        kafka: kafka.clone(),
        log: "mock".into(),
        store: store.clone(),
        index: index.clone(),
        dead_letters: Some(producer.clone()),
        metrics: IngestMetrics::register(&prometheus::Registry::new()).unwrap(),
        batch_max: 50,
        linger: Duration::from_millis(5),
        initial_load_min: 0,
        runtime: None,
    }
    .spawn(cancel.clone())
    .await
    .unwrap();

    let mut events = common::seed();
    // Updates and retractions of some activities and dialogues.
    let targets = common::targets(&events, 8);
    for (i, t) in targets.iter().enumerate() {
        let mut update = t.clone();
        update.id = EventId(format!("update-{i}"));
        update.version = Some(1);
        if let Payload::Activity(a) = &mut update.payload {
            a.title = format!("{} (updated)", a.title);
        }
        events.push(update);
        if i % 2 == 0 {
            let mut r = Event::retraction(t.partner.clone(), "/test", t.kind, t.subject.clone(), None);
            r.id = EventId(format!("retract-{i}"));
            r.version = Some(2);
            events.push(r);
        }
    }

    let mut watermark = handle.watermark();
    let mut checks = 0;
    for chunk in events.chunks(23) {
        let mut receipts = Vec::new();
        for e in chunk {
            receipts.push(producer.publish(e).await.unwrap());
        }
        for r in &receipts {
            wait_applied(&mut watermark, &r.topic, r.partition, r.offset, Duration::from_secs(30)).await.unwrap();
        }
        let (graph, idx) = (graph_entities(&store), index_entities(&index));
        assert_eq!(graph, idx, "graph and index disagree after {} events", checks * 23 + chunk.len());
        checks += 1;
    }
    assert!(checks > 5);
    let retracted = coalition_mapping::entity_iri(targets[0].kind, &targets[0].subject.0);
    assert!(!graph_entities(&store).contains(retracted.as_str()));
    cancel.cancel();
    handle.join().await.unwrap();
}

//! An initial load (bulk) and a replay through the pipeline of the same log end in identical
//! stores and indexes — through creates, updates, retractions, stale and duplicate events and
//! records that must be dead-lettered (one an invalid copy of a valid event) — and the
//! bulk-loaded materializer goes on streaming. Runs the real materializer against librdkafka's
//! in-process mock cluster (the hot-path smoke test rebuilds a replica from a real broker this
//! way).

use coalition_events::{Event, EventId, Kind, Payload};
use coalition_ingest::{
    wait_applied, EventProducer, IngestMetrics, KafkaConfig, Materializer, MaterializerHandle, Receipt, Watermark,
};
use coalition_search::SearchIndex;
use coalition_store::{digest, GraphStore};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

mod common;

/// The seed, then updates, retractions, an older version arriving late and a redelivery.
fn history() -> Vec<Event> {
    let mut events = common::seed();
    let targets = common::targets(&events, 6);
    for (i, t) in targets.iter().enumerate() {
        let mut newer = t.clone();
        newer.id = EventId(format!("update-{i}"));
        newer.version = Some(2);
        if let Payload::Activity(a) = &mut newer.payload {
            a.title = format!("{} (updated)", a.title);
        }
        events.push(newer);
        let mut older = t.clone();
        older.id = EventId(format!("late-{i}"));
        older.version = Some(1);
        events.push(older);
        if i % 2 == 0 {
            let mut r = Event::retraction(t.partner.clone(), "/test", t.kind, t.subject.clone(), None);
            r.id = EventId(format!("retract-{i}"));
            r.version = Some(3);
            events.push(r);
        }
    }
    events.push(events[3].clone());
    events
}

struct Replica {
    store: GraphStore,
    index: Arc<SearchIndex>,
    metrics: IngestMetrics,
    handle: MaterializerHandle,
}

async fn replica(kafka: &KafkaConfig, group: &str, initial_load_min: u64, cancel: &CancellationToken) -> Replica {
    let mut kafka = kafka.clone();
    kafka.consumer_group = group.to_owned();
    let store = GraphStore::in_memory().unwrap();
    let index = Arc::new(SearchIndex::in_memory().unwrap());
    let metrics = IngestMetrics::register(&prometheus::Registry::new()).unwrap();
    let handle = Materializer {
        dead_letters: Some(EventProducer::new(&kafka, None).unwrap()),
        kafka,
        log: "mock".into(),
        store: store.clone(),
        index: index.clone(),
        metrics: metrics.clone(),
        batch_max: 40,
        linger: Duration::from_millis(5),
        initial_load_min,
        runtime: None,
    }
    .spawn(cancel.clone())
    .await
    .unwrap();
    Replica { store, index, metrics, handle }
}

async fn wait_for(r: &Replica, receipts: &[Receipt]) -> Watermark {
    let mut w = r.handle.watermark();
    for rc in receipts {
        wait_applied(&mut w, &rc.topic, rc.partition, rc.offset, Duration::from_secs(60)).await.unwrap();
    }
    let last = w.borrow().clone();
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initial_load_equals_a_replay_and_streams_on() {
    let (_cluster, kafka) = common::cluster();
    let producer = EventProducer::new(&kafka, None).unwrap();
    let mut receipts = Vec::new();
    // Ahead of the events, an invalid copy of one (an activity type outside the schema's list,
    // which the shapes refuse too): the same id, version, time and entity, so the same entity
    // graph and order. It must be dead-lettered, and the valid event after it must win its graph
    // (the second pass skips what the first dead-lettered, and checks no shapes).
    let events = history();
    let mut twin = events.iter().rfind(|e| e.kind == Kind::Activity).unwrap().clone();
    assert!(
        common::targets(&events, 6).iter().all(|t| t.id != twin.id),
        "the valid event is the only one of its entity"
    );
    let Payload::Activity(a) = &mut twin.payload else { unreachable!() };
    a.activity_type = "webinar".into();
    receipts.push(producer.publish(&twin).await.unwrap());
    for e in events {
        receipts.push(producer.publish(&e).await.unwrap());
    }
    let poison = ["{not json", r#"{"specversion":"1.0","id":"x","type":"org.coalition.activity.submitted.v1"}"#];
    for (i, bad) in poison.iter().enumerate() {
        let topic = Kind::Activity.topic();
        receipts.push(producer.send(topic, &format!("bad-{i}"), bad.as_bytes(), "test", Vec::new()).await.unwrap());
    }
    let log_records = receipts.len() as u64;

    let cancel = CancellationToken::new();
    let bulk = replica(&kafka, "bulk", 1, &cancel).await;
    let replay = replica(&kafka, "replay", 0, &cancel).await;
    let (wb, wr) = (wait_for(&bulk, &receipts).await, wait_for(&replay, &receipts).await);
    assert_eq!(bulk.metrics.batch_size.get_sample_count(), 0, "the whole log went through the initial load");
    assert!(replay.metrics.batch_size.get_sample_count() > 0);
    assert!(wb.caught_up);
    assert_eq!((wb.applied, wb.dead_lettered), (wr.applied, wr.dead_lettered));
    assert_eq!(wb.dead_lettered, poison.len() as u64 + 1, "the poison records and the invalid copy");
    assert_eq!(bulk.metrics.stale.get(), replay.metrics.stale.get());
    assert!(bulk.metrics.stale.get() >= 6, "the late older versions are stale");
    assert_eq!(bulk.metrics.duplicates.get(), replay.metrics.duplicates.get());
    assert!(bulk.metrics.duplicates.get() >= 1, "the redelivery is a duplicate");
    assert!(wb.applied + bulk.metrics.stale.get() + bulk.metrics.duplicates.get() + wb.dead_lettered == log_records);
    assert_eq!(wb.graph, wr.graph);
    assert_eq!(wb.index, wr.index);
    assert_eq!(bulk.store.offsets("mock").unwrap(), replay.store.offsets("mock").unwrap());
    assert_eq!(bulk.index.offsets("mock").unwrap(), replay.index.offsets("mock").unwrap());
    assert_eq!(digest(&bulk.store).unwrap(), digest(&replay.store).unwrap());
    assert_eq!(bulk.index.digest().unwrap(), replay.index.digest().unwrap());
    assert!(!bulk.store.discard_unfinished_load("mock").unwrap(), "the load finished");

    // After the load the bulk-loaded replica streams like any other.
    let mut later = Vec::new();
    for (i, e) in history().into_iter().filter(|e| e.kind == Kind::Outcome).take(3).enumerate() {
        let mut e = e;
        e.id = EventId(format!("after-load-{i}"));
        e.version = Some(5);
        later.push(producer.publish(&e).await.unwrap());
    }
    wait_for(&bulk, &later).await;
    wait_for(&replay, &later).await;
    assert!(bulk.metrics.batch_size.get_sample_count() > 0);
    assert_eq!(digest(&bulk.store).unwrap(), digest(&replay.store).unwrap());
    assert_eq!(bulk.index.digest().unwrap(), replay.index.digest().unwrap());
    cancel.cancel();
    bulk.handle.join().await.unwrap();
    replay.handle.join().await.unwrap();
}

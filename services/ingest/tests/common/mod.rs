//! What the materializer tests share: librdkafka's in-process mock cluster with every coalition
//! topic, and the built-in dataset as events.

use coalition_events::{decode, Event, Kind, DEAD_LETTER_TOPIC};
use coalition_ingest::KafkaConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

const SEED: &str = include_str!("../../../server/seed/coalition-seed.jsonl");

/// A mock cluster with every coalition topic (three partitions each) and the dead-letter topic.
pub fn cluster() -> (MockCluster<'static, DefaultProducerContext>, KafkaConfig) {
    let cluster = MockCluster::new(1).unwrap();
    let mut topics = Kind::topics();
    topics.push(DEAD_LETTER_TOPIC);
    for t in topics {
        cluster.create_topic(t, 3, 1).unwrap();
    }
    let kafka = KafkaConfig::new(cluster.bootstrap_servers());
    (cluster, kafka)
}

/// The built-in dataset's events, in file order.
pub fn seed() -> Vec<Event> {
    SEED.lines().filter(|l| !l.trim().is_empty()).map(|l| decode(l.as_bytes()).unwrap()).collect()
}

/// The first `n` activities and dialogues of `events`: entities to update and retract.
pub fn targets(events: &[Event], n: usize) -> Vec<Event> {
    events.iter().filter(|e| matches!(e.kind, Kind::Activity | Kind::Dialogue)).take(n).cloned().collect()
}

//! Metric names of the ingest layer, registered in one Prometheus registry shared with the API.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone, Debug)]
pub struct IngestMetrics {
    /// Records read from Kafka, by topic.
    pub consumed: IntCounterVec,
    /// Events applied to the graph (and index).
    pub applied: IntCounter,
    /// Events skipped because their event id was already applied (redelivery, replay).
    pub duplicates: IntCounter,
    /// Events recorded in provenance but not applied: their entity already had a newer version.
    pub stale: IntCounter,
    /// Records sent to the dead-letter topic, by reason code.
    pub dead_lettered: IntCounterVec,
    /// Broker-reported high watermark minus the next offset applied, per partition. Some brokers
    /// misreport the high watermark; this gauge measures what the broker says, nothing more.
    pub lag: IntGaugeVec,
    /// Next offset each sink will apply, per partition: the watermark.
    pub watermark: IntGaugeVec,
    /// Seconds to commit one batch, by sink.
    pub commit_seconds: HistogramVec,
    /// Events per committed batch.
    pub batch_size: Histogram,
    /// Seconds from a record's broker timestamp to both graph and index having committed it.
    pub visible_seconds: Histogram,
    /// Events produced by mutations and imports, by topic.
    pub produced: IntCounterVec,
}

impl IngestMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = IngestMetrics {
            consumed: IntCounterVec::new(
                Opts::new("coalition_events_consumed_total", "Records read from Kafka"),
                &["topic"],
            )?,
            applied: IntCounter::new("coalition_events_applied_total", "Events applied to the graph and index")?,
            duplicates: IntCounter::new(
                "coalition_events_duplicate_total",
                "Events skipped because their id was already applied",
            )?,
            stale: IntCounter::new(
                "coalition_events_stale_total",
                "Events not applied because their entity already had a newer version",
            )?,
            dead_lettered: IntCounterVec::new(
                Opts::new("coalition_dead_letter_total", "Records sent to the dead-letter topic"),
                &["reason"],
            )?,
            lag: IntGaugeVec::new(
                Opts::new("coalition_consumer_lag_events", "Broker-reported high watermark minus next applied offset"),
                &["topic", "partition"],
            )?,
            watermark: IntGaugeVec::new(
                Opts::new("coalition_watermark_next_offset", "Next offset each sink will apply, per partition"),
                &["sink", "topic", "partition"],
            )?,
            commit_seconds: HistogramVec::new(
                HistogramOpts::new("coalition_commit_seconds", "Time to commit one batch")
                    .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
                &["sink"],
            )?,
            batch_size: Histogram::with_opts(
                HistogramOpts::new("coalition_batch_events", "Events per committed batch")
                    .buckets(vec![1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0]),
            )?,
            visible_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "coalition_visible_seconds",
                    "Seconds from a record's broker timestamp to graph and index having committed it",
                )
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            )?,
            produced: IntCounterVec::new(
                Opts::new("coalition_events_produced_total", "Events produced to Kafka"),
                &["topic"],
            )?,
        };
        registry.register(Box::new(m.consumed.clone()))?;
        registry.register(Box::new(m.applied.clone()))?;
        registry.register(Box::new(m.duplicates.clone()))?;
        registry.register(Box::new(m.stale.clone()))?;
        registry.register(Box::new(m.dead_lettered.clone()))?;
        registry.register(Box::new(m.lag.clone()))?;
        registry.register(Box::new(m.watermark.clone()))?;
        registry.register(Box::new(m.commit_seconds.clone()))?;
        registry.register(Box::new(m.batch_size.clone()))?;
        registry.register(Box::new(m.visible_seconds.clone()))?;
        registry.register(Box::new(m.produced.clone()))?;
        Ok(m)
    }
}

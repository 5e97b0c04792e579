//! Bulk import: publishes a JSON Lines file of CloudEvents to their topics through the same
//! producer partners' mutations use. Lines that fail validation are reported, not published.

use crate::{EventProducer, IngestError, Receipt};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Default)]
pub struct ImportReport {
    pub published: usize,
    /// (line number, error) of each rejected line.
    pub rejected: Vec<(usize, String)>,
    pub receipts: Vec<Receipt>,
}

/// Publishes every valid event in `text` (one CloudEvent per line; blank lines ignored).
pub async fn import_file(producer: &EventProducer, text: &str, progress: bool) -> Result<ImportReport, IngestError> {
    let lines: Vec<(usize, &str)> =
        text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty()).collect();
    let bar = ProgressBar::with_draw_target(
        Some(lines.len() as u64),
        if progress { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() },
    );
    bar.set_style(
        ProgressStyle::with_template("{spinner} importing [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})")
            .expect("static template")
            .progress_chars("=> "),
    );
    let mut report = ImportReport::default();
    let mut valid = Vec::new();
    for (number, line) in lines {
        match coalition_events::decode(line.as_bytes()) {
            Ok(event) => valid.push(event),
            Err(e) => {
                report.rejected.push((number, e.to_string()));
                bar.inc(1);
            }
        }
    }
    let mut sends = futures::stream::iter(valid.iter().map(|event| producer.publish(event))).buffered(256);
    while let Some(result) = sends.next().await {
        report.receipts.push(result?);
        report.published += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(report)
}

//! `coalition-bench gen`: a deterministic synthetic coalition, written as event files (the same
//! schemas as real partners' events) and as N-Quads of the same facts, so other engines can load
//! identical data.
//!
//! Shape for C conversations: partners ≈ C/50 (Zipf-skewed: a few large, many small), dialogues =
//! C with quotes, activities ≈ C, outcomes ≈ C/2, case studies ≈ C/100, evidence statistics ≈
//! C/20, the six recommendations with two narrower ones each.

use anyhow::Context as _;
use coalition_events::{
    Activity, CaseStudy, Dialogue, EntityId, Event, EventId, EvidenceStatistic, Measured, MeasuredKind, Outcome,
    Partner, PartnerId, Payload, Quote, Recommendation,
};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The workload's seeded generator, with the draws the synthetic coalition needs.
pub struct Rng(crate::workload::Rng);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(crate::workload::Rng::new(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Zipf-like skew over `0..n`: index 0 is the most likely.
    pub fn skewed(&mut self, n: usize) -> usize {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((n as f64).powf(u) - 1.0).floor().clamp(0.0, (n - 1) as f64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const COUNTRIES: &[&str] = &["GB", "US", "JP", "FR", "BR", "AU", "CA", "DE", "MX", "ES"];
const GROUPS: &[&str] = &["women", "ethnic-minority", "disabled", "lgbtq", "aged-65-plus"];
const ACTIVITY_TYPES: &[&str] = &["training", "learning-session", "workshop", "advocacy", "convening", "campaign"];
const ORG_TYPES: &[&str] = &["university", "ngo", "hospital", "company", "association"];
const PHRASES: &[&str] = &[
    "I did not feel listened to by my doctor",
    "Nothing about us without us",
    "They explained my treatment in plain language",
    "I waited months and nobody called back",
    "The nurse took time to understand my situation",
    "Community health workers helped me trust the clinic again",
    "I stopped going after a bad experience",
    "Materials in my language made all the difference",
];

/// What `generate` wrote.
#[derive(Debug, serde::Serialize)]
pub struct GenReport {
    pub conversations: usize,
    pub events: usize,
    pub events_file: PathBuf,
    pub nquads_file: Option<PathBuf>,
    pub quads: usize,
}

fn id(s: String) -> EntityId {
    EntityId(s)
}

fn event(n: &mut usize, partner: &str, time: chrono::DateTime<chrono::Utc>, payload: Payload) -> Event {
    *n += 1;
    let mut e = Event::new(PartnerId(partner.to_owned()), format!("/partners/{partner}"), payload);
    e.id = EventId(format!("gen-{:09}", *n));
    e.time = time;
    e
}

fn date(rng: &mut Rng) -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2022, 1, 1).expect("valid date") + chrono::Days::new(rng.below(4 * 365) as u64)
}

/// Every event of a synthetic coalition of `conversations` dialogues, in dependency order.
pub fn events(conversations: usize, seed: u64) -> Vec<Event> {
    let mut rng = Rng::new(seed);
    let mut n = 0usize;
    let start =
        chrono::DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z").expect("valid").with_timezone(&chrono::Utc);
    let mut clock = 0i64;
    let mut tick = || {
        clock += 1;
        start + chrono::Duration::milliseconds(clock)
    };
    let mut out = Vec::new();
    let partners: Vec<String> = (0..(conversations / 50).max(5)).map(|i| format!("partner-{i:05}")).collect();
    for (i, p) in partners.iter().enumerate() {
        out.push(event(
            &mut n,
            p,
            tick(),
            Payload::Partner(Partner {
                id: id(p.clone()),
                name: format!("Partner organisation {i}"),
                organisation_type: ORG_TYPES[i % ORG_TYPES.len()].to_owned(),
                country: Some(COUNTRIES[i % COUNTRIES.len()].to_owned()),
                coalition_member: i % 3 == 0,
                description: None,
                website: None,
            }),
        ));
    }
    let lead = partners[0].clone();
    let mut recs = Vec::new();
    for r in 1..=6 {
        let top = format!("rec-{r}");
        out.push(event(
            &mut n,
            &lead,
            tick(),
            Payload::Recommendation(Recommendation {
                id: id(top.clone()),
                number: Some(r),
                title: format!("Recommendation {r}"),
                text: format!("Recommended action number {r} to close the trust gap"),
                broader: None,
            }),
        ));
        recs.push(top.clone());
        for k in 1..=2 {
            let narrow = format!("rec-{r}-{k}");
            out.push(event(
                &mut n,
                &lead,
                tick(),
                Payload::Recommendation(Recommendation {
                    id: id(narrow.clone()),
                    number: None,
                    title: format!("Recommendation {r}.{k}"),
                    text: format!("A narrower action refining recommendation {r}"),
                    broader: Some(id(top.clone())),
                }),
            ));
            recs.push(narrow);
        }
    }
    let case_studies: Vec<String> = (0..(conversations / 100).max(1)).map(|i| format!("cs-{i:06}")).collect();
    for (i, cs) in case_studies.iter().enumerate() {
        let partner = partners[rng.skewed(partners.len())].clone();
        // Every top-level recommendation gets case studies, round-robin.
        let top = format!("rec-{}", i % 6 + 1);
        out.push(event(
            &mut n,
            &partner,
            tick(),
            Payload::CaseStudy(CaseStudy {
                id: id(cs.clone()),
                title: format!("Case study {cs}"),
                country: rng.pick(COUNTRIES).to_string(),
                narrative: format!("A local action led by {partner} to rebuild trust"),
                partners: vec![id(partner.clone())],
                implements: vec![id(top)],
                start_date: Some(date(&mut rng)),
                source: None,
            }),
        ));
    }
    let activities: Vec<String> = (0..conversations).map(|i| format!("act-{i:08}")).collect();
    for a in &activities {
        let partner = partners[rng.skewed(partners.len())].clone();
        out.push(event(
            &mut n,
            &partner,
            tick(),
            Payload::Activity(Activity {
                id: id(a.clone()),
                title: format!("Activity {a}"),
                description: Some(rng.pick(PHRASES).to_string()),
                activity_type: rng.pick(ACTIVITY_TYPES).to_string(),
                date: date(&mut rng),
                country: Some(rng.pick(COUNTRIES).to_string()),
                reach: Some(rng.below(500) as i64 + 1),
                led_by: vec![id(partner.clone())],
                case_study: (rng.below(4) == 0).then(|| id(rng.pick(&case_studies).clone())),
                programme: None,
                implements: vec![id(rng.pick(&recs).clone())],
                audience_groups: vec![rng.pick(GROUPS).to_string()],
            }),
        ));
    }
    for i in 0..conversations {
        let partner = partners[rng.skewed(partners.len())].clone();
        let quotes = (0..1 + rng.below(3))
            .map(|_| Quote {
                text: rng.pick(PHRASES).to_string(),
                speaker: Some("Participant".into()),
                speaker_role: None,
                language: None,
            })
            .collect();
        out.push(event(
            &mut n,
            &partner,
            tick(),
            Payload::Dialogue(Dialogue {
                id: id(format!("dlg-{i:08}")),
                title: format!("Listening dialogue {i}"),
                date: date(&mut rng),
                country: rng.pick(COUNTRIES).to_string(),
                audience_groups: vec![rng.pick(GROUPS).to_string()],
                reach: Some(rng.below(200) as i64 + 5),
                internal: rng.below(2) == 0,
                summary: Some(rng.pick(PHRASES).to_string()),
                quotes,
                partners: vec![id(partner.clone())],
                informs: vec![id(rng.pick(&recs).clone())],
                programme: None,
                language: None,
            }),
        ));
    }
    for i in 0..conversations / 2 {
        let on_case = rng.below(5) == 0;
        let (kind, target) = if on_case {
            (MeasuredKind::CaseStudy, rng.pick(&case_studies).clone())
        } else {
            (MeasuredKind::Activity, rng.pick(&activities).clone())
        };
        let partner = partners[rng.skewed(partners.len())].clone();
        out.push(event(
            &mut n,
            &partner,
            tick(),
            Payload::Outcome(Outcome {
                id: id(format!("out-{i:08}")),
                description: "Measured result".into(),
                metric: "people reached".into(),
                value: rng.below(1000) as f64,
                unit: "people".into(),
                date: date(&mut rng),
                baseline: None,
                target: None,
                measures: Measured { kind, id: id(target) },
            }),
        ));
    }
    for i in 0..(conversations / 20).max(1) {
        out.push(event(
            &mut n,
            &lead,
            tick(),
            Payload::Evidence(EvidenceStatistic {
                id: id(format!("ev-{i:07}")),
                measure: "trust-damaging experience".into(),
                description: None,
                group: rng.pick(GROUPS).to_string(),
                country: Some(rng.pick(COUNTRIES).to_string()),
                percentage: Some(rng.below(100) as f64),
                sample_size: Some(rng.below(3000) as i64 + 100),
                year: 2022 + rng.below(3) as i64,
                supports: vec![id(rng.pick(&recs).clone())],
                source: None,
            }),
        ));
    }
    out
}

/// Writes `events-<C>.jsonl` (and `data-<C>.nq` with `nquads`) into `out_dir`.
pub fn generate(conversations: usize, seed: u64, out_dir: &Path, nquads: bool) -> anyhow::Result<GenReport> {
    std::fs::create_dir_all(out_dir)?;
    let all = events(conversations, seed);
    let events_file = out_dir.join(format!("events-{conversations}.jsonl"));
    let mut w = std::io::BufWriter::new(
        std::fs::File::create(&events_file).with_context(|| format!("creating {}", events_file.display()))?,
    );
    for e in &all {
        w.write_all(&e.to_bytes())?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    let mut quads = 0;
    let nquads_file = if nquads {
        let path = out_dir.join(format!("data-{conversations}.nq"));
        let mut w = std::io::BufWriter::new(std::fs::File::create(&path)?);
        for (i, e) in all.iter().enumerate() {
            let pos =
                coalition_mapping::LogPosition { topic: e.kind.topic().to_owned(), partition: 0, offset: i as i64 };
            let mapped = coalition_mapping::map_event(e, &pos).map_err(|err| anyhow::anyhow!("{err}"))?;
            for q in &mapped.facts {
                writeln!(w, "{q} .")?;
                quads += 1;
            }
        }
        w.flush()?;
        Some(path)
    } else {
        None
    };
    Ok(GenReport { conversations, events: all.len(), events_file, nquads_file, quads })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_valid() {
        let a = events(500, 7);
        let b = events(500, 7);
        assert_eq!(a, b);
        assert_ne!(a, events(500, 8));
        for e in &a {
            coalition_events::decode(&e.to_bytes()).unwrap_or_else(|err| panic!("{}: {err}", e.id));
        }
        let count = |k: coalition_events::Kind| a.iter().filter(|e| e.kind == k).count();
        assert_eq!(count(coalition_events::Kind::Dialogue), 500);
        assert_eq!(count(coalition_events::Kind::Activity), 500);
        assert_eq!(count(coalition_events::Kind::Outcome), 250);
        assert_eq!(count(coalition_events::Kind::Evidence), 25);
        assert_eq!(count(coalition_events::Kind::Recommendation), 18);
    }
}

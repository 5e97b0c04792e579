//! The text index: Tantivy over every text-bearing entity (names, narratives, recommendation
//! texts, descriptions, dialogue summaries and quotes).
//!
//! Guarantees: each commit carries, as its payload, the offsets of the events it covers, so after
//! a crash the index knows exactly where it stands and the materializer replays only what is
//! missing. An entity's documents are replaced as a whole when a new event for it arrives.
//! Calls are blocking; async callers go through `spawn_blocking`.

use arc_swap::ArcSwap;
use coalition_mapping::{Offsets, SearchDoc};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tantivy::aggregation::agg_req::Aggregations;
use tantivy::aggregation::agg_result::AggregationResults;
use tantivy::aggregation::AggregationCollector;
use tantivy::collector::{Collector, Count, SegmentCollector, TopDocs};
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, Occur, Query, QueryParser, TermQuery, Weight};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, FAST, INDEXED, STORED, STRING,
};
use tantivy::snippet::SnippetGenerator;
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, NgramTokenizer, RemoveLongFilter, SimpleTokenizer, Stemmer,
    StopWordFilter, TextAnalyzer,
};
use tantivy::{
    doc, DocId, DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, Score, Searcher, SegmentReader, TantivyDocument,
    Term, TERMINATED,
};

const WRITER_HEAP_BYTES: usize = 64 * 1024 * 1024;
/// One indexing thread: a commit then writes one segment, not one per thread, and the index stage
/// leaves the other core to the graph stage (measured: commits of 100 events 18.9 → 10.4 ms).
const WRITER_THREADS: usize = 1;
/// How much of a text language detection reads.
const DETECTION_SAMPLE_CHARS: usize = 400;

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("search index error: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("cannot open index directory: {0}")]
    Directory(#[from] tantivy::directory::error::OpenDirectoryError),
    #[error("invalid search query \"{query}\": {message}")]
    Query { query: String, message: String },
    /// A query past a limit, which the message names (the query is not repeated: it is large).
    #[error("{0}")]
    QueryTooLarge(String),
    #[error("search index i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("index commit payload is corrupt: {0}")]
    Payload(String),
}

/// Longest search query, in bytes. Parsing grows with the query: 60 KB of words took Tantivy's
/// parser 1.9 s; a query this long parses in a few milliseconds.
pub const MAX_QUERY_BYTES: usize = 1_000;

/// Deepest nesting of brackets in a search query. Tantivy's parser backtracks at every level, so
/// its work doubles with each: 15 levels took 0.23 s, 20 took 6.9 s, and some 10,000 overflowed
/// the stack of the thread parsing it and aborted the process.
pub const MAX_QUERY_NESTING: usize = 8;

/// Refuses a query past [`MAX_QUERY_BYTES`] or [`MAX_QUERY_NESTING`], before any parser sees it.
/// Brackets inside a quoted phrase are words, not nesting.
pub fn check_query(query: &str) -> Result<(), SearchError> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(SearchError::QueryTooLarge(format!(
            "search query is {} bytes; the limit is {MAX_QUERY_BYTES}",
            query.len()
        )));
    }
    let (mut depth, mut deepest, mut in_phrase, mut escaped) = (0usize, 0usize, false, false);
    for c in query.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => in_phrase = !in_phrase,
            '(' | '[' | '{' if !in_phrase => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' | ']' | '}' if !in_phrase => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if deepest > MAX_QUERY_NESTING {
        return Err(SearchError::QueryTooLarge(format!(
            "search query nests {deepest} levels of brackets; the limit is {MAX_QUERY_NESTING}"
        )));
    }
    Ok(())
}

/// Languages with their own analysis (stemming, stop words, accent folding; CJK bigrams for
/// Japanese). Text in any other language goes to the `other` fields (lower-cased, folded).
pub const LANGUAGES: &[&str] = &["en", "fr", "pt", "es", "de", "ja", "other"];

#[derive(Debug, Clone)]
struct Fields {
    iri: Field,
    entity_iri: Field,
    kind: Field,
    entity_id: Field,
    /// Per language (same order as [`LANGUAGES`]): (title, body).
    text: Vec<(Field, Field)>,
    language: Field,
    country: Field,
    groups: Field,
    partners: Field,
    recommendations: Field,
    year: Field,
}

impl Fields {
    fn for_language(&self, language: &str) -> (Field, Field) {
        let i = LANGUAGES.iter().position(|l| *l == language).unwrap_or(LANGUAGES.len() - 1);
        self.text[i]
    }
}

fn analyzer_name(language: &str) -> String {
    format!("coalition_{language}")
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = |language: &str| {
        TextOptions::default()
            .set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(&analyzer_name(language))
                    .set_index_option(IndexRecordOption::WithFreqsAndPositions),
            )
            .set_stored()
    };
    let facet = STRING | STORED | FAST;
    let fields = Fields {
        iri: b.add_text_field("iri", STRING | STORED),
        entity_iri: b.add_text_field("entity_iri", STRING | STORED),
        kind: b.add_text_field("kind", facet.clone()),
        entity_id: b.add_text_field("entity_id", STRING | STORED),
        text: LANGUAGES
            .iter()
            .map(|l| {
                (b.add_text_field(&format!("title_{l}"), text(l)), b.add_text_field(&format!("body_{l}"), text(l)))
            })
            .collect(),
        language: b.add_text_field("language", STRING | STORED),
        country: b.add_text_field("country", facet.clone()),
        groups: b.add_text_field("group", facet.clone()),
        partners: b.add_text_field("partner", facet.clone()),
        recommendations: b.add_text_field("recommendation", facet),
        year: b.add_i64_field("year", INDEXED | STORED | FAST),
    };
    (b.build(), fields)
}

fn register_analyzers(index: &Index) {
    for language in LANGUAGES {
        let analyzer = match *language {
            "ja" => TextAnalyzer::builder(NgramTokenizer::new(1, 2, false).expect("valid n-gram sizes"))
                .filter(RemoveLongFilter::limit(40))
                .filter(LowerCaser)
                .build(),
            "other" => {
                TextAnalyzer::builder(SimpleTokenizer::default()).filter(LowerCaser).filter(AsciiFoldingFilter).build()
            }
            code => {
                let lang = match code {
                    "fr" => Language::French,
                    "pt" => Language::Portuguese,
                    "es" => Language::Spanish,
                    "de" => Language::German,
                    _ => Language::English,
                };
                let stop = StopWordFilter::new(lang).expect("stop words exist for the supported languages");
                TextAnalyzer::builder(SimpleTokenizer::default())
                    .filter(RemoveLongFilter::limit(40))
                    .filter(LowerCaser)
                    .filter(stop)
                    .filter(Stemmer::new(lang))
                    .filter(AsciiFoldingFilter)
                    .build()
            }
        };
        index.tokenizers().register(&analyzer_name(language), analyzer);
    }
}

/// The language a document is analysed as: the given BCP 47 tag's primary subtag when
/// supported, else detected from the text (whatlang), else `other`.
pub fn analysis_language(given: &str, text: &str) -> &'static str {
    let primary = given.split('-').next().unwrap_or("").to_ascii_lowercase();
    if let Some(l) = LANGUAGES.iter().find(|l| **l == primary && **l != "other") {
        return l;
    }
    // The opening of a long text tells its language as well as the whole, at a fraction of the cost.
    let sample = text.char_indices().nth(DETECTION_SAMPLE_CHARS).map_or(text, |(end, _)| &text[..end]);
    match whatlang::detect(sample).filter(|i| i.is_reliable() || sample.chars().count() > 40).map(|i| i.lang()) {
        Some(whatlang::Lang::Eng) => "en",
        Some(whatlang::Lang::Fra) => "fr",
        Some(whatlang::Lang::Por) => "pt",
        Some(whatlang::Lang::Spa) => "es",
        Some(whatlang::Lang::Deu) => "de",
        Some(whatlang::Lang::Jpn) | Some(whatlang::Lang::Cmn) => "ja",
        Some(_) => "other",
        None if given.is_empty() => "en",
        None => "other",
    }
}

/// What a commit records: which log, and how far into it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct CommitPayload {
    log: String,
    offsets: Offsets,
}

/// Filters applied inside the search (not after paging).
#[derive(Debug, Clone, Default)]
pub struct SearchFilter {
    pub kinds: Vec<String>,
    pub country: Option<String>,
    pub group: Option<String>,
    pub partner: Option<String>,
    pub recommendation: Option<String>,
    pub year: Option<i64>,
    /// Typo tolerance: terms match within one edit.
    pub fuzzy: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub iri: String,
    pub entity_iri: String,
    pub kind: String,
    pub entity_id: String,
    pub title: String,
    pub score: f32,
    /// HTML snippet with matches in `<b>`.
    pub snippet: String,
    pub language: String,
}

/// How far [`SearchIndex::search`] counts the matches of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counting {
    /// Exactly up to this many; past it, the total says "at least this many" (as web search and
    /// Elasticsearch's `track_total_hits` do). The cost follows the limit, not the matches.
    UpTo(usize),
    /// Every match.
    Every,
    /// Every match, and counts of them by facet (kind, country, group, partner, recommendation,
    /// year). These read every match's fast fields, which a page of hits does not need.
    EveryWithFacets,
}

/// Where [`Counting::UpTo`] stops by default: a common word at 1M conversations matches millions
/// of documents, and counting them all costs more than finding the page.
pub const COUNT_EXACT_UP_TO: usize = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub struct SearchResults {
    /// Matching documents: all of them when `total_exact`, else a lower bound (the counting limit).
    pub total: usize,
    pub total_exact: bool,
    pub hits: Vec<Hit>,
    /// With [`Counting::EveryWithFacets`] (empty otherwise): counts over all matching documents,
    /// not just this page.
    pub facets: Facets,
}

/// Counts by facet name, each sorted by count (descending) then value.
pub type Facets = BTreeMap<String, Vec<(String, u64)>>;

/// The index, swappable in place: every clone of the owning `Arc` sees a [`SearchIndex::replace_with`]
/// at once, while searches already running finish on the index they started with.
pub struct SearchIndex {
    core: ArcSwap<IndexCore>,
    /// Changes made visible to searches so far (see [`SearchIndex::epoch`]).
    epoch: AtomicU64,
}

struct IndexCore {
    index: Index,
    reader: IndexReader,
    /// `None` for a read-only handle (e.g. `coalition digest` beside a running server).
    writer: Mutex<Option<IndexWriter>>,
    fields: Fields,
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex").finish_non_exhaustive()
    }
}

impl SearchIndex {
    /// Opens (or creates) the index in `dir`.
    pub fn open(dir: &Path) -> Result<Self, SearchError> {
        std::fs::create_dir_all(dir)?;
        let (schema, fields) = schema();
        let index = Index::open_or_create(MmapDirectory::open(dir)?, schema)?;
        Self::from_index(index, fields, true)
    }

    /// Opens an existing index for reading only (no writer lock is taken).
    pub fn open_reader(dir: &Path) -> Result<Self, SearchError> {
        let (_, fields) = schema();
        let index = Index::open(MmapDirectory::open(dir)?)?;
        Self::from_index(index, fields, false)
    }

    /// An index in memory, for tests.
    pub fn in_memory() -> Result<Self, SearchError> {
        let (schema, fields) = schema();
        Self::from_index(Index::create_in_ram(schema), fields, true)
    }

    fn from_index(index: Index, fields: Fields, writable: bool) -> Result<Self, SearchError> {
        register_analyzers(&index);
        let writer =
            if writable { Some(index.writer_with_num_threads(WRITER_THREADS, WRITER_HEAP_BYTES)?) } else { None };
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        let core = IndexCore { index, reader, writer: Mutex::new(writer), fields };
        Ok(SearchIndex { core: ArcSwap::from_pointee(core), epoch: AtomicU64::new(0) })
    }

    /// Makes this handle serve `other`'s index from now on (a rebuilt index swapping in).
    pub fn replace_with(&self, other: &SearchIndex) {
        self.core.store(other.core.load_full());
        self.changed();
    }

    /// A number that grows with every change searches can see (each commit made visible, a
    /// rebuilt index swapping in), read after the change is visible: two equal readings mean
    /// searches in between saw one state of the index.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Makes what `core` committed visible to searches (the reader reloads only here), then
    /// moves the epoch.
    fn publish(&self, core: &IndexCore) -> Result<(), SearchError> {
        let reloaded = core.reader.reload();
        self.changed();
        Ok(reloaded?)
    }

    /// The offsets of `log` covered by the last commit (empty if the last commit was for
    /// another log, e.g. an earlier embedded broker).
    pub fn offsets(&self, log: &str) -> Result<Offsets, SearchError> {
        self.core.load().offsets(log)
    }

    /// Replaces the documents of each entity in `replaced` with `docs`, then commits with `offsets`
    /// as payload and makes the result visible to searches.
    pub fn apply(
        &self,
        log: &str,
        replaced: &[String],
        docs: &[SearchDoc],
        offsets: &Offsets,
    ) -> Result<(), SearchError> {
        let core = self.core.load();
        core.apply(log, replaced, docs, offsets)?;
        self.publish(&core)
    }

    /// Adds `docs` without committing: they become visible with the next commit (an initial
    /// load adds its documents in chunks and commits once, with the offsets the load reached).
    pub fn add_uncommitted(&self, docs: &[SearchDoc]) -> Result<(), SearchError> {
        let core = self.core.load();
        let mut guard = core.writer.lock().expect("index writer lock poisoned");
        core.add(writable(&mut guard)?, docs)
    }

    /// Commits what was added with `offsets` as payload and makes it visible to searches.
    pub fn commit(&self, log: &str, offsets: &Offsets) -> Result<(), SearchError> {
        let core = self.core.load();
        let mut guard = core.writer.lock().expect("index writer lock poisoned");
        core.commit(writable(&mut guard)?, log, offsets)?;
        drop(guard);
        self.publish(&core)
    }

    /// Number of documents visible to searches.
    pub fn num_docs(&self) -> u64 {
        self.core.load().num_docs()
    }

    /// Every visible document's (iri, entity iri), sorted, for consistency checks.
    pub fn all_iris(&self) -> Result<Vec<(String, String)>, SearchError> {
        self.core.load().all_iris()
    }

    /// SHA-256 (hex) over the visible documents, sorted by IRI, with every stored field, and
    /// their number.
    pub fn digest(&self) -> Result<(String, usize), SearchError> {
        self.core.load().digest()
    }

    /// Ranked hits for `query` among the documents matching `filter`, and how many match, counted
    /// exactly up to [`COUNT_EXACT_UP_TO`].
    pub fn search(
        &self,
        query: &str,
        filter: &SearchFilter,
        limit: usize,
        offset: usize,
    ) -> Result<SearchResults, SearchError> {
        self.search_counting(query, filter, limit, offset, Counting::UpTo(COUNT_EXACT_UP_TO))
    }

    /// [`SearchIndex::search`], with the matches counted as `counting` asks, all from one view of
    /// the index.
    pub fn search_counting(
        &self,
        query: &str,
        filter: &SearchFilter,
        limit: usize,
        offset: usize,
        counting: Counting,
    ) -> Result<SearchResults, SearchError> {
        self.core.load().search(query, filter, limit, offset, counting)
    }
}

/// The writer behind `guard`, or an error for an index opened read-only.
fn writable(guard: &mut Option<IndexWriter>) -> Result<&mut IndexWriter, SearchError> {
    guard.as_mut().ok_or_else(|| SearchError::Payload("index opened read-only".into()))
}

impl IndexCore {
    fn offsets(&self, log: &str) -> Result<Offsets, SearchError> {
        let metas = self.index.load_metas()?;
        match metas.payload {
            None => Ok(Offsets::default()),
            Some(p) => {
                let payload: CommitPayload =
                    serde_json::from_str(&p).map_err(|e| SearchError::Payload(e.to_string()))?;
                Ok(if payload.log == log { payload.offsets } else { Offsets::default() })
            }
        }
    }

    /// Replaces `replaced`'s documents with `docs` and commits; visible once published.
    fn apply(&self, log: &str, replaced: &[String], docs: &[SearchDoc], offsets: &Offsets) -> Result<(), SearchError> {
        let mut guard = self.writer.lock().expect("index writer lock poisoned");
        let writer = writable(&mut guard)?;
        for entity in replaced {
            writer.delete_term(Term::from_field_text(self.fields.entity_iri, entity));
        }
        self.add(writer, docs)?;
        self.commit(writer, log, offsets)
    }

    fn add(&self, writer: &mut IndexWriter, docs: &[SearchDoc]) -> Result<(), SearchError> {
        let f = &self.fields;
        for d in docs {
            let language = analysis_language(&d.language, &format!("{} {}", d.title, d.body));
            let (title, body) = f.for_language(language);
            let mut document = doc!(
                f.iri => d.iri.as_str(),
                f.entity_iri => d.entity_iri.as_str(),
                f.kind => d.kind.as_str(),
                f.entity_id => d.entity_id.as_str(),
                title => d.title.as_str(),
                body => d.body.as_str(),
                f.language => language,
            );
            if let Some(y) = d.year {
                document.add_i64(f.year, y);
            }
            if let Some(c) = &d.country {
                document.add_text(f.country, c);
            }
            for g in &d.groups {
                document.add_text(f.groups, g);
            }
            for p in &d.partners {
                document.add_text(f.partners, p);
            }
            for r in &d.recommendations {
                document.add_text(f.recommendations, r);
            }
            writer.add_document(document)?;
        }
        Ok(())
    }

    fn commit(&self, writer: &mut IndexWriter, log: &str, offsets: &Offsets) -> Result<(), SearchError> {
        let payload = CommitPayload { log: log.to_owned(), offsets: offsets.clone() };
        let payload = serde_json::to_string(&payload).map_err(|e| SearchError::Payload(e.to_string()))?;
        let mut prepared = writer.prepare_commit()?;
        prepared.set_payload(&payload);
        prepared.commit()?;
        Ok(())
    }

    fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    fn all_iris(&self) -> Result<Vec<(String, String)>, SearchError> {
        let searcher = self.reader.searcher();
        let mut out = Vec::new();
        for segment in searcher.segment_readers() {
            let store = segment.get_store_reader(16)?;
            for doc_id in segment.doc_ids_alive() {
                let d: TantivyDocument = store.get(doc_id)?;
                out.push((text(&d, self.fields.iri), text(&d, self.fields.entity_iri)));
            }
        }
        out.sort();
        Ok(out)
    }

    fn digest(&self) -> Result<(String, usize), SearchError> {
        use sha2::{Digest, Sha256};
        let searcher = self.reader.searcher();
        let schema = self.index.schema();
        let mut docs = Vec::new();
        for segment in searcher.segment_readers() {
            let store = segment.get_store_reader(16)?;
            for doc_id in segment.doc_ids_alive() {
                let d: TantivyDocument = store.get(doc_id)?;
                let mut fields: Vec<(String, String)> = d
                    .field_values()
                    .map(|(field, value)| {
                        (schema.get_field_name(field).to_owned(), value.as_str().unwrap_or_default().to_owned())
                    })
                    .collect();
                fields.sort();
                docs.push((text(&d, self.fields.iri), fields));
            }
        }
        docs.sort();
        let mut hasher = Sha256::new();
        for (iri, fields) in &docs {
            hasher.update(iri.as_bytes());
            hasher.update([0]);
            for (name, value) in fields {
                hasher.update(name.as_bytes());
                hasher.update([1]);
                hasher.update(value.as_bytes());
                hasher.update([2]);
            }
            hasher.update([3]);
        }
        Ok((format!("{:x}", hasher.finalize()), docs.len()))
    }

    /// The text query alone (for snippets) and combined with `filter`'s clauses.
    fn query(&self, query: &str, filter: &SearchFilter) -> Result<ParsedQuery, SearchError> {
        check_query(query)?;
        let f = &self.fields;
        // Each language's fields are queried with that language's analysis, and a document matches
        // if the query matches it in the language it was indexed in: all terms must match
        // (after stop-word removal and stemming), within one language's fields.
        let mut languages: Vec<Box<dyn Query>> = Vec::new();
        for (title, body) in &f.text {
            let mut parser = QueryParser::for_index(&self.index, vec![*title, *body]);
            parser.set_field_boost(*title, 2.0);
            if filter.fuzzy {
                parser.set_field_fuzzy(*title, false, 1, true);
                parser.set_field_fuzzy(*body, false, 1, true);
            }
            parser.set_conjunction_by_default();
            let q = parser
                .parse_query(query)
                .map_err(|e| SearchError::Query { query: query.to_owned(), message: e.to_string() })?;
            languages.push(q);
        }
        let text_query: Box<dyn Query> =
            Box::new(BooleanQuery::new(languages.iter().map(|q| (Occur::Should, q.box_clone())).collect()));
        // Every filter must match.
        let mut filters: Vec<Box<dyn Query>> = Vec::new();
        let term = |field: Field, value: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(Term::from_field_text(field, value), IndexRecordOption::Basic))
        };
        if !filter.kinds.is_empty() {
            let any: Vec<(Occur, Box<dyn Query>)> =
                filter.kinds.iter().map(|k| (Occur::Should, term(f.kind, k))).collect();
            filters.push(Box::new(BooleanQuery::new(any)));
        }
        for (field, value) in [
            (f.country, &filter.country),
            (f.groups, &filter.group),
            (f.partners, &filter.partner),
            (f.recommendations, &filter.recommendation),
        ] {
            if let Some(v) = value {
                filters.push(term(field, v));
            }
        }
        if let Some(y) = filter.year {
            filters.push(Box::new(TermQuery::new(Term::from_field_i64(f.year, y), IndexRecordOption::Basic)));
        }
        // `q` and the filters, if any.
        let filtered = |q: Box<dyn Query>| -> Box<dyn Query> {
            if filters.is_empty() {
                return q;
            }
            let all = std::iter::once(q).chain(filters.iter().map(|c| c.box_clone()));
            Box::new(BooleanQuery::new(all.map(|c| (Occur::Must, c)).collect()))
        };
        let by_language = languages.into_iter().map(&filtered).collect();
        Ok(ParsedQuery { combined: filtered(text_query.box_clone()), text: text_query, by_language })
    }

    fn facets(searcher: &Searcher, query: &dyn Query) -> Result<Facets, SearchError> {
        let facets_request: Aggregations = serde_json::from_value(serde_json::json!({
            "kind": { "terms": { "field": "kind", "size": 50 } },
            "country": { "terms": { "field": "country", "size": 50 } },
            "group": { "terms": { "field": "group", "size": 50 } },
            "partner": { "terms": { "field": "partner", "size": 50 } },
            "recommendation": { "terms": { "field": "recommendation", "size": 50 } },
            "year": { "terms": { "field": "year", "size": 50 } },
        }))
        .map_err(|e| SearchError::Payload(format!("facet request: {e}")))?;
        let facets_collector = AggregationCollector::from_aggs(facets_request, Default::default());
        Ok(facets_from(searcher.search(query, &facets_collector)?))
    }

    fn search(
        &self,
        query: &str,
        filter: &SearchFilter,
        limit: usize,
        offset: usize,
        counting: Counting,
    ) -> Result<SearchResults, SearchError> {
        let f = &self.fields;
        let ParsedQuery { text: text_query, combined, by_language } = self.query(query, filter)?;
        let searcher = self.reader.searcher();
        // Two passes rather than one collector for both: counting alone needs no scores (blocks
        // of matches), and the top hits alone can skip blocks that cannot reach the page (block
        // WAND). Together, every match would be scored.
        let (total, total_exact) = match counting {
            Counting::UpTo(limit) => {
                let seen = searcher.search(&*combined, &CountUpTo(limit.saturating_add(1)))?;
                (seen.min(limit), seen <= limit)
            }
            Counting::Every | Counting::EveryWithFacets => (searcher.search(&*combined, &Count)?, true),
        };
        // The best hits one language at a time, merged. Each document is indexed in one language's
        // fields, so it matches at most one language's query, with the score it has in the union:
        // the union's best hits are the best of each language's. Alone, a single word's query is
        // a union of two term queries (title, body), whose best hits Tantivy finds with block
        // WAND, skipping blocks that cannot reach the page; in one union with the n-gram
        // (Japanese) alternative — a phrase, not a term — every match is scored.
        let wanted = limit.max(1).saturating_add(offset);
        let mut top = Vec::new();
        for q in &by_language {
            top.extend(searcher.search(&**q, &TopDocs::with_limit(wanted))?);
        }
        top.sort_by(|(a_score, a), (b_score, b)| b_score.total_cmp(a_score).then(a.cmp(b)));
        let top = top.into_iter().skip(offset);
        let facets = match counting {
            Counting::EveryWithFacets => Self::facets(&searcher, &*combined)?,
            Counting::UpTo(_) | Counting::Every => Facets::new(),
        };
        let mut snippet_generators: Vec<Option<SnippetGenerator>> = (0..LANGUAGES.len()).map(|_| None).collect();
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top.into_iter().take(limit) {
            let d: TantivyDocument = searcher.doc(address)?;
            let language = text(&d, f.language);
            let i = LANGUAGES.iter().position(|l| *l == language).unwrap_or(LANGUAGES.len() - 1);
            let (title_field, body_field) = f.text[i];
            if snippet_generators[i].is_none() {
                snippet_generators[i] = Some(SnippetGenerator::create(&searcher, &*text_query, body_field)?);
            }
            let mut snippet = snippet_generators[i].as_ref().expect("created above").snippet_from_doc(&d);
            snippet.set_snippet_prefix_postfix("<b>", "</b>");
            let mut html = snippet.to_html();
            if html.is_empty() {
                html = text(&d, body_field).chars().take(160).collect();
            }
            hits.push(Hit {
                iri: text(&d, f.iri),
                entity_iri: text(&d, f.entity_iri),
                kind: text(&d, f.kind),
                entity_id: text(&d, f.entity_id),
                title: text(&d, title_field),
                score,
                snippet: html,
                language,
            });
        }
        Ok(SearchResults { total, total_exact, hits, facets })
    }
}

/// A search's query: the text alone (what snippets highlight), with the filter's clauses (what
/// is searched), and the latter one language at a time (the same order as [`LANGUAGES`]).
struct ParsedQuery {
    text: Box<dyn Query>,
    combined: Box<dyn Query>,
    by_language: Vec<Box<dyn Query>>,
}

/// Counts the live documents matching a query, stopping at `.0`: each segment stops once it has
/// seen that many, and the segments' counts are summed up to it.
struct CountUpTo(usize);

impl Collector for CountUpTo {
    type Fruit = usize;
    type Child = SegmentCountUpTo;

    fn for_segment(&self, _segment: u32, _reader: &SegmentReader) -> tantivy::Result<SegmentCountUpTo> {
        Ok(SegmentCountUpTo { seen: 0, limit: self.0 })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, counts: Vec<usize>) -> tantivy::Result<usize> {
        Ok(counts.into_iter().fold(0, usize::saturating_add).min(self.0))
    }

    /// Walks the segment's matches itself rather than through `Weight::for_each_no_score`, which
    /// cannot stop before the segment's end.
    fn collect_segment(&self, weight: &dyn Weight, _segment: u32, reader: &SegmentReader) -> tantivy::Result<usize> {
        let mut scorer = weight.scorer(reader, 1.0)?;
        let alive = reader.alive_bitset();
        let mut seen = 0;
        let mut doc = scorer.doc();
        while doc != TERMINATED && seen < self.0 {
            if alive.is_none_or(|a| a.is_alive(doc)) {
                seen += 1;
            }
            doc = scorer.advance();
        }
        Ok(seen)
    }
}

/// Required by [`Collector`]; [`CountUpTo::collect_segment`] does the counting.
struct SegmentCountUpTo {
    seen: usize,
    limit: usize,
}

impl SegmentCollector for SegmentCountUpTo {
    type Fruit = usize;

    fn collect(&mut self, _doc: DocId, _score: Score) {
        self.seen = (self.seen + 1).min(self.limit);
    }

    fn harvest(self) -> usize {
        self.seen
    }
}

/// Facet counts by field name, each sorted by count (descending) then value.
fn facets_from(results: AggregationResults) -> Facets {
    let mut out = BTreeMap::new();
    let Ok(value) = serde_json::to_value(&results) else { return out };
    if let Some(map) = value.as_object() {
        for (name, agg) in map {
            let mut buckets: Vec<(String, u64)> = agg["buckets"]
                .as_array()
                .map(|b| {
                    b.iter()
                        .map(|bucket| {
                            let key = match &bucket["key"] {
                                serde_json::Value::String(s) => s.clone(),
                                other => other.to_string().trim_end_matches(".0").to_owned(),
                            };
                            (key, bucket["doc_count"].as_u64().unwrap_or(0))
                        })
                        .collect()
                })
                .unwrap_or_default();
            buckets.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            out.insert(name.clone(), buckets);
        }
    }
    out
}

fn text(d: &TantivyDocument, field: Field) -> String {
    d.get_first(field).and_then(|v| v.as_str()).unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests;

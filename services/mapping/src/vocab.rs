//! Every IRI the mapping writes, in one place. A test checks that each `coal:` term here is
//! declared in `ontologies/coalition.ttl`, so code and ontology cannot drift.

/// The coalition ontology namespace.
pub const COAL: &str = "https://w3id.org/coalition/ns#";
/// Entity IRIs: `{ID}{kind}/{id}`.
pub const ID: &str = "https://w3id.org/coalition/id/";
/// Named graphs: `{GRAPH}{kind}/{id}` holds one entity's current facts.
pub const GRAPH: &str = "https://w3id.org/coalition/graph/";
/// Event IRIs: `{EVENT}{event id}`.
pub const EVENT: &str = "https://w3id.org/coalition/event/";
/// The graph holding PROV-O provenance of every event and entity graph.
pub const PROVENANCE_GRAPH: &str = "https://w3id.org/coalition/graph/provenance";
/// The graph holding consumed offsets, committed with the data they cover.
pub const OFFSETS_GRAPH: &str = "https://w3id.org/coalition/graph/offsets";
/// The evidence projections: Data Cube observations maintained with every applied batch, one
/// named graph per data set.
pub const DASHBOARD_GRAPH: &str = "https://w3id.org/coalition/graph/projection/dashboard";
pub const EVIDENCE_GRAPH: &str = "https://w3id.org/coalition/graph/projection/evidence";
pub const ROLLUP_GRAPH: &str = "https://w3id.org/coalition/graph/projection/rollup";
pub const CASE_STUDIES_GRAPH: &str = "https://w3id.org/coalition/graph/projection/case-studies";
/// The reference counts behind the projections' distinct counts and latest dates.
pub const PROJECTION_CELLS_GRAPH: &str = "https://w3id.org/coalition/graph/projection-cells";
/// Data Cube data sets of the projections.
pub const DASHBOARD_DATASET: &str = "https://w3id.org/coalition/id/dataset/recommendation-dashboard";
pub const EVIDENCE_DATASET: &str = "https://w3id.org/coalition/id/dataset/evidence-by-group-and-country";
pub const ROLLUP_DATASET: &str = "https://w3id.org/coalition/id/dataset/partner-activity-rollup";
pub const CASE_STUDIES_DATASET: &str = "https://w3id.org/coalition/id/dataset/recommendation-case-studies";
/// The coalition itself, which partners are members of.
pub const COALITION: &str = "https://w3id.org/coalition/id/coalition/a-million-conversations";
/// The SKOS concept scheme of recommendations.
pub const RECOMMENDATION_SCHEME: &str = "https://w3id.org/coalition/id/scheme/recommendations";

pub const RDF_TYPE: &str = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type";
pub const RDFS_LABEL: &str = "http://www.w3.org/2000/01/rdf-schema#label";

pub mod coal {
    macro_rules! terms {
        ($($name:ident = $local:literal),* $(,)?) => {
            $(pub const $name: &str = concat!("https://w3id.org/coalition/ns#", $local);)*
            /// Every `coal:` term the mapping uses, for the ontology drift test.
            pub const ALL: &[&str] = &[$($name),*];
        };
    }
    terms!(
        // classes
        PARTNER = "Partner",
        PROGRAMME = "Programme",
        DIALOGUE = "Dialogue",
        QUOTE = "Quote",
        RECOMMENDATION = "Recommendation",
        CASE_STUDY = "CaseStudy",
        ACTIVITY = "Activity",
        OUTCOME = "Outcome",
        EVIDENCE_STATISTIC = "EvidenceStatistic",
        SOURCE_DOCUMENT = "SourceDocument",
        LINK = "Link",
        EVENT = "Event",
        OFFSET = "Offset",
        // properties
        ENTITY_ID = "entityId",
        ORGANISATION_TYPE = "organisationType",
        COUNTRY = "country",
        ROLE = "role",
        PILLAR = "pillar",
        PARTNER_PROP = "partner",
        AUDIENCE_GROUP = "audienceGroup",
        REACH = "reach",
        INTERNAL = "internal",
        HAS_QUOTE = "hasQuote",
        SPEAKER = "speaker",
        SPEAKER_ROLE = "speakerRole",
        INFORMS = "informs",
        PART_OF_PROGRAMME = "partOfProgramme",
        PART_OF_CASE_STUDY = "partOfCaseStudy",
        RECOMMENDATION_NUMBER = "recommendationNumber",
        LED_BY = "ledBy",
        IMPLEMENTS = "implements",
        ACTIVITY_TYPE = "activityType",
        MEASURES = "measures",
        METRIC = "metric",
        VALUE = "value",
        UNIT = "unit",
        BASELINE = "baseline",
        TARGET = "target",
        MEASURE = "measure",
        GROUP = "group",
        PERCENTAGE = "percentage",
        SAMPLE_SIZE = "sampleSize",
        YEAR = "year",
        SUPPORTS = "supports",
        LINK_SUBJECT = "linkSubject",
        LINK_RELATION = "linkRelation",
        LINK_OBJECT = "linkObject",
        DESCRIBES = "describes",
        EVENT_ID = "eventId",
        EVENT_TYPE = "eventType",
        TOPIC = "topic",
        PARTITION = "partition",
        OFFSET_PROP = "offset",
        NEXT_OFFSET = "nextOffset",
        INITIAL_LOAD = "InitialLoad",
        SOURCE_URI = "sourceUri",
        ENTITY_VERSION = "entityVersion",
        RETRACTED = "retracted",
        // evidence projections (Data Cube)
        PROJECTION_CELL = "ProjectionCell",
        REF_RECOMMENDATION = "refRecommendation",
        REF_PARTNER = "refPartner",
        REF_PERIOD = "refPeriod",
        REF_GROUP = "refGroup",
        REF_AREA = "refArea",
        CASE_STUDY_COUNT = "caseStudyCount",
        ACTIVITY_COUNT = "activityCount",
        PARTNER_COUNT = "partnerCount",
        COUNTRY_COUNT = "countryCount",
        PEOPLE_REACHED = "peopleReached",
        OUTCOME_COUNT = "outcomeCount",
        LATEST_OUTCOME_DATE = "latestOutcomeDate",
        DIALOGUE_COUNT = "dialogueCount",
        STATISTIC_COUNT = "statisticCount",
        CELL = "cell",
        CELL_DIMENSION = "cellDimension",
        CELL_VALUE = "cellValue",
        CELL_COUNT = "cellCount",
    );
}

pub mod prov {
    pub const ENTITY: &str = "http://www.w3.org/ns/prov#Entity";
    pub const ACTIVITY: &str = "http://www.w3.org/ns/prov#Activity";
    pub const WAS_GENERATED_BY: &str = "http://www.w3.org/ns/prov#wasGeneratedBy";
    pub const WAS_ASSOCIATED_WITH: &str = "http://www.w3.org/ns/prov#wasAssociatedWith";
    pub const STARTED_AT_TIME: &str = "http://www.w3.org/ns/prov#startedAtTime";
}

pub mod org {
    pub const ORGANIZATION: &str = "http://www.w3.org/ns/org#Organization";
    pub const MEMBER_OF: &str = "http://www.w3.org/ns/org#memberOf";
}

pub mod skos {
    pub const CONCEPT: &str = "http://www.w3.org/2004/02/skos/core#Concept";
    pub const CONCEPT_SCHEME: &str = "http://www.w3.org/2004/02/skos/core#ConceptScheme";
    pub const PREF_LABEL: &str = "http://www.w3.org/2004/02/skos/core#prefLabel";
    pub const DEFINITION: &str = "http://www.w3.org/2004/02/skos/core#definition";
    pub const BROADER: &str = "http://www.w3.org/2004/02/skos/core#broader";
    pub const IN_SCHEME: &str = "http://www.w3.org/2004/02/skos/core#inScheme";
}

pub mod dcterms {
    pub const TITLE: &str = "http://purl.org/dc/terms/title";
    pub const DESCRIPTION: &str = "http://purl.org/dc/terms/description";
    pub const DATE: &str = "http://purl.org/dc/terms/date";
    pub const SOURCE: &str = "http://purl.org/dc/terms/source";
    pub const PUBLISHER: &str = "http://purl.org/dc/terms/publisher";
    pub const ISSUED: &str = "http://purl.org/dc/terms/issued";
    pub const LANGUAGE: &str = "http://purl.org/dc/terms/language";
}

pub mod schema {
    pub const PERSON: &str = "http://schema.org/Person";
    pub const NAME: &str = "http://schema.org/name";
    pub const JOB_TITLE: &str = "http://schema.org/jobTitle";
    pub const URL: &str = "http://schema.org/url";
    pub const START_DATE: &str = "http://schema.org/startDate";
    pub const TEXT: &str = "http://schema.org/text";
    pub const EVENT: &str = "http://schema.org/Event";
}

pub mod qb {
    pub const OBSERVATION: &str = "http://purl.org/linked-data/cube#Observation";
    pub const DATA_SET: &str = "http://purl.org/linked-data/cube#dataSet";
}

pub mod xsd {
    pub const STRING: &str = "http://www.w3.org/2001/XMLSchema#string";
    pub const INTEGER: &str = "http://www.w3.org/2001/XMLSchema#integer";
    pub const DECIMAL: &str = "http://www.w3.org/2001/XMLSchema#decimal";
    pub const DOUBLE: &str = "http://www.w3.org/2001/XMLSchema#double";
    pub const BOOLEAN: &str = "http://www.w3.org/2001/XMLSchema#boolean";
    pub const DATE: &str = "http://www.w3.org/2001/XMLSchema#date";
    pub const DATE_TIME: &str = "http://www.w3.org/2001/XMLSchema#dateTime";
    pub const ANY_URI: &str = "http://www.w3.org/2001/XMLSchema#anyURI";
}

//! A SHACL Core subset evaluated on the quads of one event, compiled from the shapes in
//! `ontologies/shapes`. Supported: node shapes with `sh:targetClass`, property shapes with a
//! single-IRI `sh:path` and `sh:minCount`, `sh:maxCount`, `sh:datatype`, `sh:nodeKind`
//! (`sh:IRI`, `sh:Literal`), `sh:pattern`, `sh:in`, `sh:minInclusive`, `sh:maxInclusive`,
//! `sh:minLength`, `sh:maxLength`. Shapes using anything else fail to compile (checked by a test),
//! so the ingest check never silently skips a constraint. The full dump is also validated with
//! pyshacl in the end-to-end tests, as an independent implementation.

use oxigraph::io::{RdfFormat, RdfParser};
use oxigraph::model::{Graph, NamedNode, NamedOrBlankNode, NamedOrBlankNodeRef, Quad, Term, TermRef};
use regex::Regex;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::OnceLock;

const SH: &str = "http://www.w3.org/ns/shacl#";
const RDF_FIRST: &str = "http://www.w3.org/1999/02/22-rdf-syntax-ns#first";
const RDF_REST: &str = "http://www.w3.org/1999/02/22-rdf-syntax-ns#rest";
const RDF_NIL: &str = "http://www.w3.org/1999/02/22-rdf-syntax-ns#nil";
const RDF_LANG_STRING: &str = "http://www.w3.org/1999/02/22-rdf-syntax-ns#langString";

macro_rules! shape_files {
    ($($name:literal),* $(,)?) => {
        /// The shape files, embedded so a deployed binary checks what the repository documents.
        pub const SHAPE_FILES: &[(&str, &str)] = &[
            $(($name, include_str!(concat!("../../../ontologies/shapes/", $name)))),*
        ];
    };
}

shape_files!(
    "partner.ttl",
    "person.ttl",
    "programme.ttl",
    "dialogue.ttl",
    "recommendation.ttl",
    "case-study.ttl",
    "activity.ttl",
    "outcome.ttl",
    "evidence.ttl",
    "source.ttl",
    "link.ttl",
    "provenance.ttl",
);

/// Predicates a property shape may use; anything else is rejected at compile time.
const SUPPORTED: &[&str] = &[
    "path",
    "minCount",
    "maxCount",
    "datatype",
    "nodeKind",
    "pattern",
    "flags",
    "in",
    "minInclusive",
    "maxInclusive",
    "minLength",
    "maxLength",
    "name",
    "description",
    "message",
    "order",
    "group",
    "severity",
];

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("shape file {file}: {message}")]
pub struct ShapeError {
    pub file: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub focus: String,
    pub path: String,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}> {}: {}", self.focus, local(&self.path), self.message)
    }
}

fn local(iri: &str) -> &str {
    iri.rsplit(['#', '/']).next().unwrap_or(iri)
}

#[derive(Debug)]
struct PropertyShape {
    path: NamedNode,
    min_count: Option<usize>,
    max_count: Option<usize>,
    datatype: Option<String>,
    node_kind: Option<String>,
    pattern: Option<Regex>,
    one_of: Option<Vec<Term>>,
    min_inclusive: Option<f64>,
    max_inclusive: Option<f64>,
    min_length: Option<usize>,
    max_length: Option<usize>,
}

#[derive(Debug)]
struct NodeShape {
    target_class: NamedNode,
    properties: Vec<PropertyShape>,
}

/// Compiled shapes.
#[derive(Debug)]
pub struct Shapes {
    shapes: Vec<NodeShape>,
}

/// The embedded shapes, compiled once.
pub fn shapes() -> &'static Shapes {
    static SHAPES: OnceLock<Shapes> = OnceLock::new();
    SHAPES.get_or_init(|| Shapes::compile(SHAPE_FILES).unwrap_or_else(|e| panic!("{e}")))
}

fn sh(local: &str) -> NamedNode {
    NamedNode::new_unchecked(format!("{SH}{local}"))
}

impl Shapes {
    pub fn compile(files: &[(&str, &str)]) -> Result<Shapes, ShapeError> {
        let mut shapes = Vec::new();
        for (file, text) in files {
            let err = |message: String| ShapeError { file: (*file).to_owned(), message };
            let mut graph = Graph::new();
            for quad in RdfParser::from_format(RdfFormat::Turtle).for_slice(text.as_bytes()) {
                let quad = quad.map_err(|e| err(e.to_string()))?;
                graph.insert(quad.as_ref());
            }
            let target = sh("targetClass");
            let node_shapes: Vec<(NamedOrBlankNode, NamedNode)> = graph
                .triples_for_predicate(&target)
                .map(|t| match t.object {
                    TermRef::NamedNode(class) => Ok((t.subject.into_owned(), class.into_owned())),
                    other => Err(err(format!("sh:targetClass {other} is not an IRI"))),
                })
                .collect::<Result<_, _>>()?;
            for (shape, class) in node_shapes {
                let mut properties = Vec::new();
                for p in graph.objects_for_subject_predicate(&shape, &sh("property")) {
                    let node = match p {
                        TermRef::NamedNode(n) => NamedOrBlankNodeRef::from(n),
                        TermRef::BlankNode(b) => NamedOrBlankNodeRef::from(b),
                        other => return Err(err(format!("sh:property {other} is not a node"))),
                    };
                    properties.push(compile_property(&graph, node).map_err(err)?);
                }
                shapes.push(NodeShape { target_class: class, properties });
            }
        }
        Ok(Shapes { shapes })
    }

    /// Target classes covered by at least one shape.
    pub fn target_classes(&self) -> std::collections::BTreeSet<String> {
        self.shapes.iter().map(|s| s.target_class.as_str().to_owned()).collect()
    }

    /// Validates the union of `quads` (graph names ignored).
    pub fn validate<'a>(&self, quads: impl IntoIterator<Item = &'a Quad>) -> Vec<Violation> {
        let mut values: HashMap<(&NamedOrBlankNode, &str), Vec<&Term>> = HashMap::new();
        let mut types: BTreeMap<&str, Vec<&NamedOrBlankNode>> = BTreeMap::new();
        for q in quads {
            values.entry((&q.subject, q.predicate.as_str())).or_default().push(&q.object);
            if q.predicate.as_str() == crate::vocab::RDF_TYPE {
                if let Term::NamedNode(class) = &q.object {
                    types.entry(class.as_str()).or_default().push(&q.subject);
                }
            }
        }
        let mut violations = Vec::new();
        for shape in &self.shapes {
            let Some(focus_nodes) = types.get(shape.target_class.as_str()) else {
                continue;
            };
            let mut seen = HashSet::new();
            for focus in focus_nodes {
                if !seen.insert(*focus) {
                    continue;
                }
                for p in &shape.properties {
                    let objects: &[&Term] = values.get(&(*focus, p.path.as_str())).map(Vec::as_slice).unwrap_or(&[]);
                    check_property(focus, p, objects, &mut violations);
                }
            }
        }
        violations
    }
}

fn compile_property(graph: &Graph, node: NamedOrBlankNodeRef<'_>) -> Result<PropertyShape, String> {
    for t in graph.triples_for_subject(node) {
        let name = t.predicate.as_str().strip_prefix(SH).unwrap_or(t.predicate.as_str());
        if !SUPPORTED.contains(&name) {
            return Err(format!("unsupported SHACL constraint {}", t.predicate));
        }
    }
    let one = |local: &str| graph.object_for_subject_predicate(node, &sh(local));
    let path = match one("path") {
        Some(TermRef::NamedNode(n)) => n.into_owned(),
        _ => return Err("property shape without a single IRI sh:path".to_owned()),
    };
    let literal = |local: &str| -> Option<String> {
        match one(local) {
            Some(TermRef::Literal(l)) => Some(l.value().to_owned()),
            _ => None,
        }
    };
    let iri = |local: &str| -> Option<String> {
        match one(local) {
            Some(TermRef::NamedNode(n)) => Some(n.as_str().to_owned()),
            _ => None,
        }
    };
    let number = |local: &str| literal(local).and_then(|v| v.parse::<f64>().ok());
    let count = |local: &str| literal(local).and_then(|v| v.parse::<usize>().ok());
    let pattern = match literal("pattern") {
        Some(p) => {
            let flags = literal("flags").unwrap_or_default();
            let p = if flags.contains('i') { format!("(?i){p}") } else { p };
            Some(Regex::new(&p).map_err(|e| format!("sh:pattern {p}: {e}"))?)
        }
        None => None,
    };
    let one_of = match one("in") {
        Some(list) => {
            let mut items = Vec::new();
            let mut cursor = list.into_owned();
            loop {
                let subject: NamedOrBlankNode = match &cursor {
                    Term::NamedNode(n) if n.as_str() == RDF_NIL => break,
                    Term::NamedNode(n) => n.clone().into(),
                    Term::BlankNode(b) => b.clone().into(),
                    _ => return Err("malformed sh:in list".to_owned()),
                };
                let first = graph
                    .object_for_subject_predicate(&subject, &NamedNode::new_unchecked(RDF_FIRST))
                    .ok_or("malformed sh:in list")?;
                items.push(first.into_owned());
                cursor = graph
                    .object_for_subject_predicate(&subject, &NamedNode::new_unchecked(RDF_REST))
                    .ok_or("malformed sh:in list")?
                    .into_owned();
            }
            Some(items)
        }
        None => None,
    };
    Ok(PropertyShape {
        path,
        min_count: count("minCount"),
        max_count: count("maxCount"),
        datatype: iri("datatype"),
        node_kind: iri("nodeKind"),
        pattern,
        one_of,
        min_inclusive: number("minInclusive"),
        max_inclusive: number("maxInclusive"),
        min_length: count("minLength"),
        max_length: count("maxLength"),
    })
}

fn check_property(focus: &NamedOrBlankNode, p: &PropertyShape, objects: &[&Term], out: &mut Vec<Violation>) {
    let mut fail = |message: String| {
        out.push(Violation {
            focus: match focus {
                NamedOrBlankNode::NamedNode(n) => n.as_str().to_owned(),
                NamedOrBlankNode::BlankNode(b) => b.to_string(),
            },
            path: p.path.as_str().to_owned(),
            message,
        })
    };
    if let Some(min) = p.min_count {
        if objects.len() < min {
            fail(format!("needs at least {min} value(s), has {}", objects.len()));
        }
    }
    if let Some(max) = p.max_count {
        if objects.len() > max {
            fail(format!("allows at most {max} value(s), has {}", objects.len()));
        }
    }
    for object in objects {
        let lexical = match object {
            Term::NamedNode(n) => n.as_str(),
            Term::BlankNode(b) => b.as_str(),
            Term::Literal(l) => l.value(),
        };
        if let Some(datatype) = &p.datatype {
            let actual = match object {
                Term::Literal(l) if l.language().is_some() => RDF_LANG_STRING,
                Term::Literal(l) => l.datatype().as_str(),
                _ => "",
            };
            if actual != datatype {
                fail(format!("value {object} is not of datatype <{datatype}>"));
            }
        }
        if let Some(kind) = &p.node_kind {
            let ok = match kind.strip_prefix(SH).unwrap_or(kind) {
                "IRI" => matches!(object, Term::NamedNode(_)),
                "Literal" => matches!(object, Term::Literal(_)),
                "BlankNode" => matches!(object, Term::BlankNode(_)),
                "BlankNodeOrIRI" => !matches!(object, Term::Literal(_)),
                "IRIOrLiteral" => !matches!(object, Term::BlankNode(_)),
                _ => true,
            };
            if !ok {
                fail(format!("value {object} is not of node kind <{kind}>"));
            }
        }
        if let Some(re) = &p.pattern {
            if !re.is_match(lexical) {
                fail(format!("value \"{lexical}\" does not match pattern {}", re.as_str()));
            }
        }
        if let Some(allowed) = &p.one_of {
            if !allowed.iter().any(|a| a == *object) {
                fail(format!("value {object} is not one of the allowed values"));
            }
        }
        let numeric = lexical.parse::<f64>().ok();
        if let Some(min) = p.min_inclusive {
            if numeric.is_none_or(|v| v < min) {
                fail(format!("value {lexical} is below the minimum {min}"));
            }
        }
        if let Some(max) = p.max_inclusive {
            if numeric.is_none_or(|v| v > max) {
                fail(format!("value {lexical} is above the maximum {max}"));
            }
        }
        let chars = lexical.chars().count();
        if let Some(min) = p.min_length {
            if chars < min {
                fail(format!("value is shorter than {min} characters"));
            }
        }
        if let Some(max) = p.max_length {
            if chars > max {
                fail(format!("value is longer than {max} characters"));
            }
        }
    }
}

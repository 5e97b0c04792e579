//! How deeply a query nests, bounded before recursion can exhaust a stack.
//!
//! Both parsers descend recursively, one call per level of `{`, `(` or `[`. The SPARQL parser has
//! no limit of its own: a query nested deep enough (`((((…`) overflows the stack of the thread
//! parsing it and aborts the whole process. The GraphQL parser stops at a stack limit, but answers
//! with a syntax error that quotes the query whole. Such queries are refused here first, with
//! `LIMIT_EXCEEDED`. The scan knows each language's strings and comments (and SPARQL's IRIs), so
//! brackets inside them neither count nor hide real ones.
//!
//! Brackets are not the only nesting. A SPARQL chain without any (`1+1+1…`, `{} UNION {} UNION
//! {}…`, `?s <p>/<p>/<p>… ?o`, a long basic graph pattern, which the optimizer turns into nested
//! joins) parses into a tree as deep as the chain is long, and dropping, optimizing or evaluating
//! that tree recurses once per level: 60 KB of `&&` overflowed a worker's stack and aborted the
//! server. So a SPARQL query is parsed on a stack of its own ([`on_query_stack`]), large enough
//! for the deepest tree a query within the size limit can hold, and refused unless its algebra is
//! small enough for the optimizer ([`check_algebra`]); its evaluation runs on such a stack too.

use crate::errors::{ApiError, ErrorKind};
use crate::query_shape::{for_each_child, for_each_expression, for_each_operand, pattern_of};
use spargebra::algebra::{Expression, GraphPattern, PropertyPathExpression};
use spargebra::Query;

/// Deepest bracket nesting a query may have: far beyond what a person writes, far below what
/// exhausts a worker's stack.
pub const MAX_NESTING: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    GraphQl,
    Sparql,
}

impl Language {
    fn name(self) -> &'static str {
        match self {
            Language::GraphQl => "GraphQL",
            Language::Sparql => "SPARQL",
        }
    }
}

/// Refuses `text` if its brackets nest deeper than `limit`.
pub fn check(text: &str, language: Language, limit: usize) -> Result<(), ApiError> {
    let depth = depth(text, language);
    if depth > limit {
        return Err(ApiError::new(
            ErrorKind::TooLarge,
            format!("{} query nests {depth} levels deep; the limit is {limit}", language.name()),
        ));
    }
    Ok(())
}

/// Nodes a SPARQL query's algebra may have: patterns, operators, path steps and the members of
/// `IN` lists. The optimizer's work grows faster than linearly in them (a thousand `FILTER`s or
/// `EXISTS` took it half a second); at this limit it takes at most about 100 ms, and the optimizer
/// and the evaluator, which recurse once per node at worst, stay well within
/// [`QUERY_STACK_BYTES`].
pub const MAX_ALGEBRA_NODES: usize = 1_000;

/// Operands a SPARQL query may join, anywhere in it: triple patterns, property path steps, and
/// the groups and `OPTIONAL`s joined to them. The optimizer orders each join greedily, with work
/// growing as the fourth power of its operands: 64 took it up to 0.2 s, 128 up to 2.9 s, and it
/// cannot be cancelled, so its slot would stay taken past the query's timeout.
pub const MAX_JOINED_OPERANDS: usize = 64;

/// The stack SPARQL queries are parsed, optimized and evaluated on. Only the pages a query
/// touches are ever committed.
pub const QUERY_STACK_BYTES: usize = 64 << 20;

/// Runs `f` on a fresh stack of [`QUERY_STACK_BYTES`].
pub fn on_query_stack<R>(f: impl FnOnce() -> R) -> R {
    stacker::grow(QUERY_STACK_BYTES, f)
}

/// Refuses `query` if its algebra has more than [`MAX_ALGEBRA_NODES`] nodes or joins more than
/// [`MAX_JOINED_OPERANDS`] operands. The walk stops at the first node past a limit, so it never
/// recurses deeper than [`MAX_ALGEBRA_NODES`].
pub fn check_algebra(query: &Query) -> Result<(), ApiError> {
    let mut budget = Budget { nodes: MAX_ALGEBRA_NODES, operands: MAX_JOINED_OPERANDS };
    count_pattern(pattern_of(query), &mut budget).map_err(|exceeded| {
        let message = match exceeded {
            Exceeded::Nodes => format!(
                "SPARQL query has more than {MAX_ALGEBRA_NODES} patterns, operators, path steps and IN members; the limit is {MAX_ALGEBRA_NODES}: split it, or pass long lists of values with VALUES"
            ),
            Exceeded::Operands => format!(
                "SPARQL query joins more than {MAX_JOINED_OPERANDS} triple patterns, path steps, groups and OPTIONALs; the limit is {MAX_JOINED_OPERANDS}, because planning the joins grows with the fourth power of their number and cannot be cancelled: split the query"
            ),
        };
        ApiError::new(ErrorKind::TooLarge, message)
    })
}

/// What a walk may still visit.
struct Budget {
    nodes: usize,
    operands: usize,
}

enum Exceeded {
    Nodes,
    Operands,
}

impl Budget {
    fn take(&mut self, nodes: usize, operands: usize) -> Result<(), Exceeded> {
        self.operands = self.operands.checked_sub(operands).ok_or(Exceeded::Operands)?;
        self.nodes = self.nodes.checked_sub(nodes).ok_or(Exceeded::Nodes)?;
        Ok(())
    }
}

fn count_pattern(p: &GraphPattern, budget: &mut Budget) -> Result<(), Exceeded> {
    match p {
        GraphPattern::Bgp { patterns } => budget.take(patterns.len().max(1), patterns.len())?,
        GraphPattern::Join { .. } | GraphPattern::LeftJoin { .. } | GraphPattern::Lateral { .. } => {
            budget.take(1, 1)?
        }
        GraphPattern::Path { path, .. } => {
            budget.take(1, 0)?;
            count_path(path, budget)?;
        }
        _ => budget.take(1, 0)?,
    }
    for_each_child(p, &mut |child| count_pattern(child, budget))?;
    for_each_expression(p, &mut |e| count_expression(e, budget))
}

fn count_expression(e: &Expression, budget: &mut Budget) -> Result<(), Exceeded> {
    budget.take(1, 0)?;
    match e {
        Expression::Exists(p) => count_pattern(p, budget),
        other => for_each_operand(other, &mut |operand| count_expression(operand, budget)),
    }
}

fn count_path(p: &PropertyPathExpression, budget: &mut Budget) -> Result<(), Exceeded> {
    budget.take(1, 1)?;
    match p {
        PropertyPathExpression::NamedNode(_) | PropertyPathExpression::NegatedPropertySet(_) => Ok(()),
        PropertyPathExpression::Reverse(a)
        | PropertyPathExpression::ZeroOrMore(a)
        | PropertyPathExpression::OneOrMore(a)
        | PropertyPathExpression::ZeroOrOne(a) => count_path(a, budget),
        PropertyPathExpression::Sequence(a, b) | PropertyPathExpression::Alternative(a, b) => {
            count_path(a, budget)?;
            count_path(b, budget)
        }
    }
}

/// The deepest nesting of `(`, `{` and `[` outside strings, comments and IRIs.
pub fn depth(text: &str, language: Language) -> usize {
    let b = text.as_bytes();
    let (mut i, mut depth, mut max) = (0, 0usize, 0usize);
    while i < b.len() {
        match b[i] {
            b'#' => {
                while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
                    i += 1;
                }
                continue;
            }
            b'"' => {
                i = skip_string(b, i, b'"', language);
                continue;
            }
            b'\'' if language == Language::Sparql => {
                i = skip_string(b, i, b'\'', language);
                continue;
            }
            b'<' if language == Language::Sparql => {
                if let Some(end) = iri_end(b, i) {
                    i = end;
                    continue;
                }
            }
            b'(' | b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b')' | b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    max
}

/// The index after the string opening at `start` with `quote` (long strings: three quotes).
/// GraphQL block strings take no escapes but `\"""`; every other string takes `\x`. A short
/// string ends at a line break, as in both grammars.
fn skip_string(b: &[u8], start: usize, quote: u8, language: Language) -> usize {
    let long = b.get(start + 1) == Some(&quote) && b.get(start + 2) == Some(&quote);
    let mut i = if long { start + 3 } else { start + 1 };
    if !long && b.get(start + 1) == Some(&quote) {
        return start + 2;
    }
    while i < b.len() {
        match b[i] {
            b'\\' if long && language == Language::GraphQl => {
                i += if b[i + 1..].starts_with(&[quote; 3]) { 4 } else { 1 };
                continue;
            }
            b'\\' => {
                i += 2;
                continue;
            }
            c if c == quote => {
                if !long {
                    return i + 1;
                }
                if b[i..].starts_with(&[quote; 3]) {
                    return i + 3;
                }
            }
            b'\n' | b'\r' if !long => return i,
            _ => {}
        }
        i += 1;
    }
    b.len()
}

/// The index after a SPARQL IRI reference opening at `start`, if one does (otherwise `<` is the
/// less-than operator).
fn iri_end(b: &[u8], start: usize) -> Option<usize> {
    for (k, &c) in b[start + 1..].iter().enumerate() {
        match c {
            b'>' => return Some(start + k + 2),
            0..=0x20 | b'<' | b'"' | b'{' | b'}' | b'|' | b'^' | b'`' | b'\\' => return None,
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brackets_in_strings_comments_and_iris_do_not_count() {
        use Language::*;
        assert_eq!(depth("{ a { b(x: [1, [2]]) } }", GraphQl), 5);
        assert_eq!(
            depth(
                r#"{ a(s: "{{{{ \" ((((") # ((((
            b(s: """ {{{{ \""" (((( """) }"#,
                GraphQl
            ),
            2
        );
        assert_eq!(depth("SELECT * WHERE { ?s <http://x/a(b)#c> ?o FILTER(?o < 3 && (?o > 1)) }", Sparql), 3);
        assert_eq!(depth("ASK { ?s ?p '((' . ?s ?p \"\"\"((\n((\"\"\" # ((((\n }", Sparql), 1);
        // A `<` that opens no IRI is the operator: what follows still counts.
        assert_eq!(depth("ASK { FILTER(1 <((((2)))) }", Sparql), 6);
        // Closers hidden in strings do not lower the count.
        assert_eq!(depth("ASK { FILTER((((\"))))\" = 1)))) }", Sparql), 5);
        assert_eq!(depth(")))(((", Sparql), 3);
        assert_eq!(depth("\"unterminated ((((", Sparql), 0);
    }

    #[test]
    fn deep_queries_are_refused_with_a_limit_error() {
        let deep = format!("{}{}", "{a".repeat(100), "}".repeat(100));
        let e = check(&deep, Language::GraphQl, MAX_NESTING).unwrap_err();
        assert_eq!(e.kind, ErrorKind::TooLarge);
        assert!(e.message.contains("100 levels"), "{}", e.message);
        assert!(check("{ recommendations { totalCount } }", Language::GraphQl, MAX_NESTING).is_ok());
    }

    fn algebra(q: &str) -> Result<(), String> {
        let query = spargebra::SparqlParser::new().parse_query(q).map_err(|e| e.to_string())?;
        check_algebra(&query).map_err(|e| e.message)
    }

    #[test]
    fn the_hot_path_queries_are_within_the_algebra_limits() {
        let dir = format!("{}/../../queries", env!("CARGO_MANIFEST_DIR"));
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "sparql") {
                let text = std::fs::read_to_string(&path).unwrap();
                assert_eq!(algebra(&text), Ok(()), "{}", path.display());
                checked += 1;
            }
        }
        assert!(checked >= 5, "{checked} queries in {dir}");
    }

    #[test]
    fn joins_are_counted_wherever_they_stand() {
        let patterns = |n: usize| (0..n).map(|i| format!("?s <urn:p{i}> ?o{i} . ")).collect::<String>();
        assert_eq!(algebra(&format!("ASK {{ {} }}", patterns(64))), Ok(()));
        for q in [
            format!("ASK {{ {} }}", patterns(65)),
            // Split between a group and an EXISTS: still one query's planning.
            format!("ASK {{ {} FILTER EXISTS {{ {} }} }}", patterns(40), patterns(25)),
            // An OPTIONAL counts as an operand beside its pattern.
            format!("ASK {{ ?s ?p ?o {} }}", "OPTIONAL { ?s ?p ?o } ".repeat(32)),
            // Every step of a path is joined: a sequence of IRIs is parsed into triple patterns,
            // any other path is counted step by step.
            format!("ASK {{ ?s <urn:a>{} ?o }}", "/<urn:a>".repeat(64)),
            format!("ASK {{ ?s <urn:a>{} ?o }}", "/<urn:a>?".repeat(40)),
        ] {
            let e = algebra(&q).unwrap_err();
            assert!(e.contains("joins more than 64"), "{q:.80}: {e}");
        }
    }

    #[test]
    fn operators_and_members_are_counted_up_to_the_node_limit() {
        // 1 + (2 per `&& true`) nodes, plus the pattern and the filter.
        assert_eq!(algebra(&format!("ASK {{ FILTER(true{}) }}", "&&true".repeat(498))), Ok(()));
        let e = algebra(&format!("ASK {{ FILTER(true{}) }}", "&&true".repeat(500))).unwrap_err();
        assert!(e.contains("more than 1000 patterns"), "{e}");
        let e = algebra(&format!("ASK {{ FILTER(?x IN ({}1)) }}", "1,".repeat(1_000))).unwrap_err();
        assert!(e.contains("more than 1000 patterns"), "{e}");
        // VALUES rows are data, not nodes.
        assert_eq!(algebra(&format!("SELECT * {{ VALUES ?x {{ {} }} }}", "1 ".repeat(5_000))), Ok(()));
    }
}

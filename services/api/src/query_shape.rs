//! Refuses SPARQL queries whose shape the timeout cannot contain.
//!
//! A join of groups of patterns that share no variable is a cartesian product. With three or
//! more such groups, the product of two of them (N² rows) can be gathered whole, in memory, as
//! one side of the next join before a row comes out (`{ ?a ?b ?c . ?d ?e ?f . ?g ?h ?i }`):
//! unbounded memory, and hours of work the timeout would only cut short. (Before the evaluator
//! stopped at its cancellation, `vendor/spareval/PATCHED.md`, such a query also went on for
//! minutes after its timeout, holding its SPARQL slot.) A product of two groups yields its rows
//! one at a time and stops at its timeout, so it is allowed; so are products with small sides
//! (`VALUES`, `BIND` of constants, an aggregate without `GROUP BY`, a subquery with a small
//! `LIMIT`).
//!
//! What this does not catch: joins on a shared but unselective variable (every pattern sharing
//! `?p`) fan out the same way. They cost more to write by accident and are left to the timeout
//! and the concurrency cap.
//!
//! The walk over the algebra (`for_each_child`, `for_each_expression`, `for_each_operand`)
//! is shared with the SPARQL endpoint, which classifies queries into admission lanes with it.

use crate::errors::{ApiError, ErrorKind};
use spargebra::algebra::{AggregateExpression, Expression, GraphPattern, OrderExpression};
use spargebra::term::{NamedNodePattern, TermPattern, Variable};
use spargebra::Query;
use std::collections::BTreeSet;

/// Unconnected groups of patterns one join may combine.
pub const MAX_PRODUCT_FACTORS: usize = 2;

/// A side of a join with at most this many rows is small enough not to count as a factor.
const SMALL: usize = 1_000;

/// Refuses `query` if it joins more than [`MAX_PRODUCT_FACTORS`] groups sharing no variable.
pub fn check(query: &Query) -> Result<(), ApiError> {
    check_pattern(pattern_of(query))
}

/// The graph pattern of `query`, whatever its form.
pub(crate) fn pattern_of(query: &Query) -> &GraphPattern {
    match query {
        Query::Select { pattern, .. }
        | Query::Construct { pattern, .. }
        | Query::Describe { pattern, .. }
        | Query::Ask { pattern, .. } => pattern,
    }
}

/// One operand of a join: the variables it binds, and whether it can be large.
struct Factor {
    variables: BTreeSet<Variable>,
    large: bool,
}

fn check_pattern(p: &GraphPattern) -> Result<(), ApiError> {
    match p {
        GraphPattern::Bgp { .. } | GraphPattern::Join { .. } | GraphPattern::LeftJoin { .. } => {
            let mut factors = Vec::new();
            collect_factors(p, &mut factors, None)?;
            let groups = large_groups(&factors);
            if groups > MAX_PRODUCT_FACTORS {
                return Err(ApiError::new(
                    ErrorKind::TooLarge,
                    format!(
                        "query joins {groups} groups of patterns that share no variable (a cartesian product); the limit is {MAX_PRODUCT_FACTORS}: connect them through shared variables"
                    ),
                ));
            }
            Ok(())
        }
        other => {
            for_each_child(other, &mut |child| check_pattern(child))?;
            for_each_expression(other, &mut |e| check_expression(e))
        }
    }
}

/// Flattens nested joins (and the left sides of OPTIONALs) into their operands, checking every
/// operand's own inside. Inside `GRAPH ?g`, every operand also binds `?g`.
fn collect_factors(p: &GraphPattern, out: &mut Vec<Factor>, graph: Option<&Variable>) -> Result<(), ApiError> {
    let with_graph = |mut variables: BTreeSet<Variable>| {
        variables.extend(graph.cloned());
        variables
    };
    match p {
        GraphPattern::Bgp { patterns } => {
            for t in patterns {
                let mut variables = BTreeSet::new();
                for term in [&t.subject, &t.object] {
                    if let TermPattern::Variable(v) = term {
                        variables.insert(v.clone());
                    }
                }
                if let NamedNodePattern::Variable(v) = &t.predicate {
                    variables.insert(v.clone());
                }
                let large = !variables.is_empty();
                out.push(Factor { variables: with_graph(variables), large });
            }
        }
        GraphPattern::Join { left, right } => {
            collect_factors(left, out, graph)?;
            collect_factors(right, out, graph)?;
        }
        GraphPattern::LeftJoin { left, right, expression } => {
            collect_factors(left, out, graph)?;
            check_pattern(right)?;
            if let Some(e) = expression {
                check_expression(e)?;
            }
            out.push(Factor { variables: with_graph(variables(right)), large: is_large(right) });
        }
        GraphPattern::Graph { name: NamedNodePattern::Variable(g), inner } => collect_factors(inner, out, Some(g))?,
        GraphPattern::Graph { inner, .. } => collect_factors(inner, out, graph)?,
        other => {
            check_pattern(other)?;
            out.push(Factor { variables: with_graph(variables(other)), large: is_large(other) });
        }
    }
    Ok(())
}

/// Groups of operands connected by shared variables that contain a large operand.
fn large_groups(factors: &[Factor]) -> usize {
    let mut group: Vec<usize> = (0..factors.len()).collect();
    fn root(group: &mut [usize], mut i: usize) -> usize {
        while group[i] != i {
            group[i] = group[group[i]];
            i = group[i];
        }
        i
    }
    for i in 0..factors.len() {
        for j in i + 1..factors.len() {
            if !factors[i].variables.is_disjoint(&factors[j].variables) {
                let (a, b) = (root(&mut group, i), root(&mut group, j));
                group[a] = b;
            }
        }
    }
    let mut large = BTreeSet::new();
    for (i, f) in factors.iter().enumerate() {
        if f.large {
            large.insert(root(&mut group, i));
        }
    }
    large.len()
}

fn variables(p: &GraphPattern) -> BTreeSet<Variable> {
    let mut out = BTreeSet::new();
    p.on_in_scope_variable(|v| {
        out.insert(v.clone());
    });
    out
}

/// Can `p` have many rows?
fn is_large(p: &GraphPattern) -> bool {
    match p {
        GraphPattern::Bgp { patterns } => !patterns.is_empty() && !variables(p).is_empty(),
        GraphPattern::Values { bindings, .. } => bindings.len() > SMALL,
        GraphPattern::Group { variables, .. } => !variables.is_empty(),
        GraphPattern::Slice { inner, length, .. } => length.is_none_or(|l| l > SMALL) && is_large(inner),
        GraphPattern::Extend { inner, .. }
        | GraphPattern::Project { inner, .. }
        | GraphPattern::Distinct { inner }
        | GraphPattern::Reduced { inner }
        | GraphPattern::OrderBy { inner, .. }
        | GraphPattern::Filter { inner, .. }
        | GraphPattern::Graph { inner, .. } => is_large(inner),
        _ => true,
    }
}

/// Calls `f` on each pattern directly inside `p` (not those inside its expressions: see
/// [`for_each_expression`]).
pub(crate) fn for_each_child<E>(p: &GraphPattern, f: &mut impl FnMut(&GraphPattern) -> Result<(), E>) -> Result<(), E> {
    match p {
        GraphPattern::Bgp { .. } | GraphPattern::Path { .. } | GraphPattern::Values { .. } => Ok(()),
        GraphPattern::Join { left, right }
        | GraphPattern::LeftJoin { left, right, .. }
        | GraphPattern::Lateral { left, right }
        | GraphPattern::Union { left, right }
        | GraphPattern::Minus { left, right } => {
            f(left)?;
            f(right)
        }
        GraphPattern::Filter { inner, .. }
        | GraphPattern::Graph { inner, .. }
        | GraphPattern::Extend { inner, .. }
        | GraphPattern::OrderBy { inner, .. }
        | GraphPattern::Project { inner, .. }
        | GraphPattern::Distinct { inner }
        | GraphPattern::Reduced { inner }
        | GraphPattern::Slice { inner, .. }
        | GraphPattern::Group { inner, .. }
        | GraphPattern::Service { inner, .. } => f(inner),
    }
}

/// The expressions of `p` itself (not of its children), where `EXISTS` hides patterns and
/// custom functions hide work: filters, binds, OPTIONAL conditions, sort keys and aggregates.
pub(crate) fn for_each_expression<E>(
    p: &GraphPattern,
    f: &mut impl FnMut(&Expression) -> Result<(), E>,
) -> Result<(), E> {
    match p {
        GraphPattern::Filter { expr, .. } => f(expr),
        GraphPattern::Extend { expression, .. } => f(expression),
        GraphPattern::LeftJoin { expression: Some(e), .. } => f(e),
        GraphPattern::OrderBy { expression, .. } => expression.iter().try_for_each(|o| match o {
            OrderExpression::Asc(e) | OrderExpression::Desc(e) => f(e),
        }),
        GraphPattern::Group { aggregates, .. } => aggregates.iter().try_for_each(|(_, a)| match a {
            AggregateExpression::FunctionCall { expr, .. } => f(expr),
            AggregateExpression::CountSolutions { .. } => Ok(()),
        }),
        _ => Ok(()),
    }
}

/// Calls `f` on each operand of `e`. An `EXISTS` has none: its pattern is the caller's to walk.
pub(crate) fn for_each_operand<E>(e: &Expression, f: &mut impl FnMut(&Expression) -> Result<(), E>) -> Result<(), E> {
    match e {
        Expression::Or(a, b)
        | Expression::And(a, b)
        | Expression::Equal(a, b)
        | Expression::SameTerm(a, b)
        | Expression::Greater(a, b)
        | Expression::GreaterOrEqual(a, b)
        | Expression::Less(a, b)
        | Expression::LessOrEqual(a, b)
        | Expression::Add(a, b)
        | Expression::Subtract(a, b)
        | Expression::Multiply(a, b)
        | Expression::Divide(a, b) => {
            f(a)?;
            f(b)
        }
        Expression::In(a, list) => {
            f(a)?;
            list.iter().try_for_each(f)
        }
        Expression::UnaryPlus(a) | Expression::UnaryMinus(a) | Expression::Not(a) => f(a),
        Expression::If(a, b, c) => {
            f(a)?;
            f(b)?;
            f(c)
        }
        Expression::Coalesce(list) | Expression::FunctionCall(_, list) => list.iter().try_for_each(f),
        Expression::NamedNode(_)
        | Expression::Literal(_)
        | Expression::Variable(_)
        | Expression::Bound(_)
        | Expression::Exists(_) => Ok(()),
    }
}

fn check_expression(e: &Expression) -> Result<(), ApiError> {
    match e {
        Expression::Exists(p) => check_pattern(p),
        other => for_each_operand(other, &mut check_expression),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(q: &str) -> Result<(), String> {
        let query = spargebra::SparqlParser::new().parse_query(q).unwrap();
        check(&query).map_err(|e| e.message)
    }

    #[test]
    fn three_unconnected_groups_are_refused() {
        for q in [
            "SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i }",
            "SELECT * WHERE { { ?a ?b ?c } { ?d ?e ?f } ?g ?h ?i FILTER(?c = ?f) }",
            "SELECT * WHERE { ?a ?b ?c OPTIONAL { ?d ?e ?f } OPTIONAL { ?g ?h ?i } }",
            "SELECT * WHERE { GRAPH <urn:g> { ?a ?b ?c . ?d ?e ?f } ?g ?h ?i }",
            "ASK { ?s ?p ?o FILTER EXISTS { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i } }",
            "SELECT * WHERE { { SELECT ?a ?d ?g WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i } LIMIT 5 } }",
            "SELECT * WHERE { ?s ?p ?o } ORDER BY (EXISTS { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i })",
            "SELECT (SUM(IF(EXISTS { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i }, 1, 0)) AS ?n) WHERE { ?s ?p ?o }",
        ] {
            let e = verdict(q).expect_err(q);
            assert!(e.contains("3 groups of patterns that share no variable"), "{q}: {e}");
        }
    }

    #[test]
    fn connected_small_and_two_way_joins_are_allowed() {
        for q in [
            "SELECT * WHERE { ?a ?b ?c . ?c ?e ?f . ?f ?h ?i }",
            "SELECT * WHERE { ?a ?b ?c . ?d ?e ?f }",
            "SELECT * WHERE { GRAPH ?g { ?a ?b ?c } GRAPH ?g { ?d ?e ?f } GRAPH ?g { ?x ?y ?z } }",
            "SELECT * WHERE { VALUES ?v { 1 2 3 } BIND(1 AS ?k) ?a ?b ?c . ?d ?e ?f }",
            "SELECT * WHERE { { SELECT (COUNT(*) AS ?n) WHERE { ?x ?y ?z } } ?a ?b ?c . ?d ?e ?f }",
            "SELECT * WHERE { { SELECT ?x WHERE { ?x ?y ?z } LIMIT 10 } ?a ?b ?c . ?d ?e ?f }",
            "SELECT * WHERE { <urn:a> <urn:b> ?c . ?d ?e ?f . <urn:x> <urn:y> <urn:z> }",
        ] {
            assert_eq!(verdict(q), Ok(()), "{q}");
        }
        for file in [
            "h1-recommendation-dashboard",
            "h2-evidence-group-country",
            "h3-recommendation-case-studies-outcomes",
            "h4-partner-rollup",
            "h5-search-to-recommendations",
        ] {
            let path = format!("{}/../../queries/{file}.sparql", env!("CARGO_MANIFEST_DIR"));
            assert_eq!(verdict(&std::fs::read_to_string(&path).unwrap()), Ok(()), "{file}");
        }
    }
}

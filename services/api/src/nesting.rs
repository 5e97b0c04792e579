//! How deeply a query's brackets nest, measured on its text before any parser sees it.
//!
//! Both parsers descend recursively, one call per level of `{`, `(` or `[`. The SPARQL parser has
//! no limit of its own: a query nested deep enough (`((((…`) overflows the stack of the thread
//! parsing it and aborts the whole process. The GraphQL parser stops at a stack limit, but answers
//! with a syntax error that quotes the query whole. Such queries are refused here first, with
//! `LIMIT_EXCEEDED`. The scan knows each language's strings and comments (and SPARQL's IRIs), so
//! brackets inside them neither count nor hide real ones.

use crate::errors::{ApiError, ErrorKind};

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
}

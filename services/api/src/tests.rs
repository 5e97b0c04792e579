#[test]
fn committed_sdl_matches_the_schema() {
    let committed = include_str!("../../../schema/graphql/schema.graphql");
    assert_eq!(
        committed,
        crate::graphql::sdl(),
        "schema/graphql/schema.graphql is stale: regenerate it with `coalition schema > schema/graphql/schema.graphql`"
    );
}

#[test]
fn error_codes_come_from_one_table() {
    use crate::errors::ErrorKind;
    assert_eq!(ErrorKind::BadUserInput.codes().1.as_u16(), 400);
    assert_eq!(ErrorKind::Unauthenticated.codes(), ("UNAUTHENTICATED", axum::http::StatusCode::UNAUTHORIZED));
    assert_eq!(ErrorKind::Forbidden.codes(), ("FORBIDDEN", axum::http::StatusCode::FORBIDDEN));
    assert_eq!(ErrorKind::ReadOnly.codes().1.as_u16(), 403);
}

#[test]
fn sparql_literals_are_escaped() {
    assert_eq!(crate::read::sparql_string("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
    assert!(crate::read::check_id("id", "x> } ; DROP ALL").is_err());
    assert!(crate::read::check_id("id", "rec-1-education").is_ok());
}

#[test]
fn graphql_requests_are_authorised_before_validation() {
    use crate::auth::{Principal, Role, TokenId};
    use crate::errors::ErrorKind;
    let token = |role| Principal::Token { id: TokenId("t1".into()), role, partner: (role == Role::Partner).then(|| "nachw".into()) };
    let check = |p: &Principal, public: bool, query: &str, op: Option<&str>| {
        let mut r = async_graphql::Request::new(query);
        if let Some(op) = op {
            r = r.operation_name(op);
        }
        crate::graphql::authorize_request(p, public, &mut r).err().map(|e| e.kind)
    };
    let submit = r#"mutation { submitActivity(partnerId: "nachw", input: { reach: -3 }) { eventId } }"#;
    let link = r#"mutation { linkToRecommendation(partnerId: "nachw", input: {}) { eventId } }"#;
    assert_eq!(check(&Principal::Anonymous, true, submit, None), Some(ErrorKind::Unauthenticated));
    assert_eq!(check(&token(Role::Reader), true, submit, None), Some(ErrorKind::Forbidden));
    assert_eq!(check(&token(Role::Policy), true, submit, None), Some(ErrorKind::Forbidden));
    assert_eq!(check(&token(Role::Partner), true, submit, None), None);
    assert_eq!(check(&token(Role::Admin), true, submit, None), None);
    assert_eq!(check(&token(Role::Partner), true, link, None), Some(ErrorKind::Forbidden));
    assert_eq!(check(&token(Role::Policy), true, link, None), None);
    // Mutations hidden in fragments, aliases and named operations are found.
    let hidden = r#"query Q { __typename } mutation M { ...F } fragment F on MutationRoot { x: linkToRecommendation(partnerId: "a", input: {}) { eventId } }"#;
    assert_eq!(check(&token(Role::Partner), true, hidden, Some("M")), Some(ErrorKind::Forbidden));
    assert_eq!(check(&token(Role::Partner), true, hidden, Some("Q")), None);
    let inline = r#"mutation { ... on MutationRoot { submitOutcome(partnerId: "a", input: {}) { eventId } } }"#;
    assert_eq!(check(&Principal::Anonymous, true, inline, None), Some(ErrorKind::Unauthenticated));
    // Reads: open by default, closed to anonymous callers on request.
    let read = "{ recommendations { totalCount } }";
    assert_eq!(check(&Principal::Anonymous, true, read, None), None);
    assert_eq!(check(&Principal::Anonymous, false, read, None), Some(ErrorKind::Unauthenticated));
    assert_eq!(check(&token(Role::Reader), false, read, None), None);
    assert_eq!(check(&Principal::Anonymous, false, "not graphql {", None), Some(ErrorKind::Unauthenticated));
    assert_eq!(check(&Principal::Anonymous, true, "not graphql {", None), None);
}

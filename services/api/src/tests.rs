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

//! How Oxigraph evaluates a query over a store, with the rows each operator produced:
//! `cargo run --release -p coalition-store --example explain -- STORE_DIR QUERY_FILE [RUNS [rows]]`.
//! Opens the store read-only (a server may hold it), evaluates the query RUNS times over the
//! union of the graphs (as `/sparql` does) printing each time, then prints the plan as JSON, or
//! with `rows` the solutions, one per line (to compare two forms of a question).
use oxigraph::sparql::{QueryResults, SparqlEvaluator};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let store = oxigraph::store::Store::open_read_only(std::path::Path::new(&args[1])).expect("store");
    let query = std::fs::read_to_string(&args[2]).expect("query file");
    let runs: usize = args.get(3).map_or(5, |s| s.parse().expect("runs"));
    let prepare = || {
        let mut prepared = SparqlEvaluator::new().parse_query(&query).expect("query");
        prepared.dataset_mut().set_default_graph_as_union();
        prepared
    };
    for _ in 0..runs {
        let started = Instant::now();
        let rows = match prepare().on_store(&store).execute().expect("evaluation") {
            QueryResults::Solutions(s) => s.count(),
            QueryResults::Boolean(_) => 1,
            QueryResults::Graph(g) => g.count(),
        };
        println!("{rows} rows in {:.2} ms", started.elapsed().as_secs_f64() * 1e3);
    }
    if args.get(4).map(String::as_str) == Some("rows") {
        if let QueryResults::Solutions(solutions) = prepare().on_store(&store).execute().expect("evaluation") {
            for solution in solutions {
                let solution = solution.expect("solution");
                let row: Vec<String> =
                    solution.values().iter().map(|v| v.as_ref().map_or(String::new(), ToString::to_string)).collect();
                println!("{}", row.join("\t"));
            }
        }
        return;
    }
    let (results, explanation) = prepare().on_store(&store).compute_statistics().explain();
    if let Ok(QueryResults::Solutions(s)) = results {
        s.for_each(drop);
    }
    explanation.write_in_json(std::io::stdout()).expect("stdout");
    println!();
}

#!/usr/bin/env python3
"""Validate a Coalition Graph dump against the SHACL shapes with pyshacl.

    python3 tests/shacl/validate.py DUMP.nq [--shapes ontologies/shapes]

The dump is read as an RDF dataset (N-Quads, or TriG / N-Triples / Turtle by file extension, or
--format). Every entity's facts and the provenance live in separate named graphs, so the union
of all graphs (plus the default graph) is validated as one data graph; this is the independent
check of the subset the Rust mapping enforces per event (services/mapping/src/shacl.rs).
All shape files under --shapes are merged into one shapes graph; no inference is applied.

Exit status: 0 when the dump conforms, 1 when it does not, 2 when the input cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import pyshacl
    from rdflib import Dataset, Graph
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(f"validate.py needs rdflib and pyshacl (pip install pyshacl): {e}")

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SHAPES = REPO / "ontologies" / "shapes"

FORMATS = {
    ".nq": "nquads",
    ".nquads": "nquads",
    ".trig": "trig",
    ".nt": "nt",
    ".ntriples": "nt",
    ".ttl": "turtle",
}


def guess_format(path: Path) -> str:
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise SystemExit(f"cannot tell the RDF format of {path}; pass --format") from None


def load_union(path: Path, fmt: str) -> Graph:
    """Parses the dump as a dataset and returns the union of its graphs as one graph."""
    dataset = Dataset()
    dataset.parse(str(path), format=fmt)
    union = Graph()
    for prefix, ns in dataset.namespaces():
        union.bind(prefix, ns, override=False)
    for s, p, o, _g in dataset.quads((None, None, None, None)):
        union.add((s, p, o))
    return union


def load_shapes(location: Path) -> tuple[Graph, list[Path]]:
    files = sorted(location.glob("*.ttl")) if location.is_dir() else [location]
    if not files:
        raise SystemExit(f"no shape files (*.ttl) in {location}")
    shapes = Graph()
    for f in files:
        shapes.parse(str(f), format="turtle")
    return shapes, files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dump", type=Path, help="N-Quads (.nq) or TriG (.trig) dump")
    parser.add_argument(
        "--shapes",
        type=Path,
        default=DEFAULT_SHAPES,
        help="directory of SHACL shape files (*.ttl), or one file (default: %(default)s)",
    )
    parser.add_argument("--format", help="RDF format of the dump (rdflib name), overriding the extension")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the verdict line")
    args = parser.parse_args(argv)

    try:
        data = load_union(args.dump, args.format or guess_format(args.dump))
        shapes, files = load_shapes(args.shapes)
    except (OSError, SyntaxError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    conforms, _report_graph, report_text = pyshacl.validate(
        data,
        shacl_graph=shapes,
        inference="none",
        abort_on_first=False,
        allow_infos=False,
        allow_warnings=False,
        meta_shacl=False,
        advanced=False,
    )
    if not args.quiet:
        print(report_text.rstrip())
    verdict = "conforms" if conforms else "does not conform"
    print(f"{args.dump}: {len(data)} triples, {len(files)} shape file(s): {verdict}")
    return 0 if conforms else 1


if __name__ == "__main__":
    sys.exit(main())

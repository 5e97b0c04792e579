#!/usr/bin/env python3
"""Checks the event schemas in schema/events/v1 and the built-in seed dataset.

Usage: python3 schema/events/check_seed.py [SEED.jsonl]   (needs `pip install jsonschema`)

1. Every schema is a valid draft 2020-12 schema.
2. Every seed line is a structured-mode CloudEvent valid against the schema picked by its `type`;
   event ids are unique; subject == data.id; entity ids are unique within their kind; times increase;
   every referenced entity id (partnerid and the ids inside data) exists, on an earlier line.
3. Every schema accepts what the Rust side serializes (empty Vecs, false booleans, nanosecond
   timestamps, uuid event ids) and rejects obviously bad events (missing required fields, unknown
   fields, negative reach, bad ids, ...).
Exits non-zero on the first category of failure, printing every problem found.
"""
import copy
import json
import os
import sys
from collections import Counter

from jsonschema import Draft202012Validator, FormatChecker

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
SCHEMA_DIR = os.path.join(HERE, "v1")
DEFAULT_SEED = os.path.join(ROOT, "services", "server", "seed", "coalition-seed.jsonl")

SLUGS = ["partner", "person", "programme", "dialogue", "recommendation", "case-study", "activity",
         "outcome", "evidence", "source", "link"]
MEASURED = {"caseStudy": "case-study", "activity": "activity"}

# Default-valued fields (Vec with serde(default), bool with serde(default)) per kind, as Rust emits them.
DEFAULTS = {
    "partner": {"coalitionMember": False},
    "person": {"roles": [], "affiliations": []},
    "programme": {"partners": []},
    "dialogue": {"audienceGroups": [], "internal": False, "quotes": [], "partners": [], "informs": []},
    "case-study": {"partners": [], "implements": []},
    "activity": {"implements": [], "audienceGroups": []},
    "evidence": {"supports": []},
}


def load_validators():
    validators, by_type = {}, {}
    for slug in SLUGS:
        with open(os.path.join(SCHEMA_DIR, f"{slug}.schema.json"), encoding="utf-8") as f:
            schema = json.load(f)
        Draft202012Validator.check_schema(schema)
        validator = Draft202012Validator(schema, format_checker=FormatChecker())
        event_type = schema["properties"]["type"]["const"]
        validators[slug] = validator
        by_type[event_type] = slug
    return validators, by_type


def references(slug, data):
    """(kind, id, field) for every entity the payload refers to."""
    refs = []
    def many(kind, field):
        refs.extend((kind, v, field) for v in data.get(field, []))
    def one(kind, field):
        if field in data:
            refs.append((kind, data[field], field))
    if slug == "person":
        many("partner", "affiliations")
    elif slug == "programme":
        many("partner", "partners")
    elif slug == "dialogue":
        many("partner", "partners"); many("recommendation", "informs"); one("programme", "programme")
    elif slug == "recommendation":
        one("recommendation", "broader")
    elif slug == "case-study":
        many("partner", "partners"); many("recommendation", "implements"); one("source", "source")
    elif slug == "activity":
        many("partner", "ledBy"); one("case-study", "caseStudy"); one("programme", "programme")
        many("recommendation", "implements")
    elif slug == "outcome":
        refs.append((MEASURED[data["measures"]["kind"]], data["measures"]["id"], "measures"))
    elif slug == "evidence":
        many("recommendation", "supports"); one("source", "source")
    elif slug == "link":
        refs.append((MEASURED[data["subject"]["kind"]], data["subject"]["id"], "subject"))
        one("recommendation", "recommendation")
    return refs


def check_seed(path, validators, by_type):
    problems, events = [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                problems.append(f"line {n}: blank line")
                continue
            try:
                events.append((n, json.loads(line)))
            except json.JSONDecodeError as e:
                problems.append(f"line {n}: not JSON: {e}")

    seen_event_ids, defined, last_time = set(), {}, None
    counts = Counter()
    for n, ev in events:
        slug = by_type.get(ev.get("type"))
        if slug is None:
            problems.append(f"line {n}: unknown type {ev.get('type')!r}")
            continue
        counts[slug] += 1
        for err in sorted(validators[slug].iter_errors(ev), key=lambda e: list(e.absolute_path)):
            problems.append(f"line {n} ({slug}): /{'/'.join(map(str, err.absolute_path))}: {err.message}")
        data = ev.get("data") or {}
        if ev.get("id") in seen_event_ids:
            problems.append(f"line {n}: duplicate event id {ev.get('id')!r}")
        seen_event_ids.add(ev.get("id"))
        if ev.get("subject") != data.get("id"):
            problems.append(f"line {n}: subject {ev.get('subject')!r} != data.id {data.get('id')!r}")
        key = (slug, data.get("id"))
        if key in defined:
            problems.append(f"line {n}: {slug} {data.get('id')!r} already defined on line {defined[key]}")
        defined.setdefault(key, n)
        if last_time is not None and ev.get("time", "") <= last_time:
            problems.append(f"line {n}: time {ev.get('time')} does not increase")
        last_time = ev.get("time", "")

    for n, ev in events:
        slug = by_type.get(ev.get("type"))
        if slug is None:
            continue
        refs = [("partner", ev.get("partnerid"), "partnerid")] + references(slug, ev.get("data") or {})
        for kind, rid, field in refs:
            at = defined.get((kind, rid))
            if at is None:
                problems.append(f"line {n} ({slug} {ev['data'].get('id')}): {field} -> {kind} {rid!r} does not exist")
            elif at > n and (kind, rid) != (slug, ev["data"].get("id")):
                problems.append(f"line {n}: {field} -> {kind} {rid!r} is defined later (line {at})")
    return problems, counts, events


def mutations(slug):
    """(label, function mutating an event in place) that must each make the event invalid."""
    def drop(field):
        return lambda ev: ev["data"].pop(field)
    def setd(field, value):
        return lambda ev: ev["data"].__setitem__(field, value)
    def sete(field, value):
        return lambda ev: ev.__setitem__(field, value)
    common = [
        ("envelope missing specversion", lambda ev: ev.pop("specversion")),
        ("envelope missing time", lambda ev: ev.pop("time")),
        ("envelope missing partnerid", lambda ev: ev.pop("partnerid")),
        ("specversion 0.3", sete("specversion", "0.3")),
        ("empty event id", sete("id", "")),
        ("event id too long", sete("id", "x" * 201)),
        ("empty source", sete("source", "")),
        ("wrong type", sete("type", "org.coalition.unknown.submitted.v1")),
        ("bad subject", sete("subject", "Not An Id")),
        ("time not RFC 3339", sete("time", "01/11/2024 09:00")),
        ("time without zone", sete("time", "2024-11-01T09:00:00")),
        ("time hour 25", sete("time", "2024-11-01T25:00:00Z")),
        ("wrong datacontenttype", sete("datacontenttype", "text/plain")),
        ("bad partnerid", sete("partnerid", "-bad")),
        ("unknown envelope attribute", sete("extra", 1)),
        ("data not an object", sete("data", [])),
        ("data missing id", drop("id")),
        ("data id with upper case", setd("id", "Bad-ID")),
        ("data id too long", setd("id", "a" * 129)),
        ("unknown data field", setd("unexpected", "x")),
        ("null optional field", setd("id", None)),
    ]
    specific = {
        "partner": [("missing name", drop("name")), ("empty name", setd("name", "")),
                    ("bad organisationType", setd("organisationType", "club")),
                    ("lower-case country", setd("country", "gb")), ("3-letter country", setd("country", "GBR")),
                    ("coalitionMember not bool", setd("coalitionMember", "yes")),
                    ("website not a URL", setd("website", "not a url"))],
        "person": [("missing name", drop("name")), ("affiliation bad id", setd("affiliations", ["Bad Id"])),
                   ("roles not array", setd("roles", "speaker"))],
        "programme": [("missing name", drop("name")), ("bad pillar", setd("pillar", "Research")),
                      ("bad startDate", setd("startDate", "2024-1-1"))],
        "dialogue": [("missing date", drop("date")), ("missing country", drop("country")),
                     ("missing title", drop("title")),
                     ("negative reach", setd("reach", -1)), ("fractional reach", setd("reach", 1.5)),
                     ("quote without text", setd("quotes", [{"speaker": "x"}])),
                     ("quote with unknown field", setd("quotes", [{"text": "t", "who": "x"}])),
                     ("bad quote language", setd("quotes", [{"text": "t", "language": "French"}])),
                     ("bad language", setd("language", "EN_gb")),
                     ("bad audience group", setd("audienceGroups", ["LGBTQ+"])),
                     ("internal not bool", setd("internal", "no"))],
        "recommendation": [("missing text", drop("text")), ("missing title", drop("title")),
                           ("number zero", setd("number", 0)), ("title too long", setd("title", "x" * 301))],
        "case-study": [("missing narrative", drop("narrative")), ("missing country", drop("country")),
                       ("implements bad id", setd("implements", ["Rec 1"]))],
        "activity": [("missing ledBy", drop("ledBy")), ("empty ledBy", setd("ledBy", [])),
                     ("negative reach", setd("reach", -5)), ("bad activityType", setd("activityType", "party")),
                     ("missing date", drop("date")), ("datetime as date", setd("date", "2024-06-01T00:00:00Z")),
                     ("month 13", setd("date", "2024-13-01")), ("day 32", setd("date", "2024-01-32"))],
        "outcome": [("missing value", drop("value")), ("value not a number", setd("value", "12")),
                    ("missing measures", drop("measures")),
                    ("bad measures kind", setd("measures", {"kind": "dialogue", "id": "x"})),
                    ("measures missing id", setd("measures", {"kind": "activity"})), ("missing unit", drop("unit"))],
        "evidence": [("missing year", drop("year")), ("missing group", drop("group")),
                     ("percentage over 100", setd("percentage", 150)), ("negative percentage", setd("percentage", -1)),
                     ("negative sampleSize", setd("sampleSize", -10)), ("year 1800", setd("year", 1800)),
                     ("year 2200", setd("year", 2200))],
        "source": [("missing title", drop("title")), ("year not integer", setd("year", "2024"))],
        "link": [("bad relation", setd("relation", "contradicts")), ("missing recommendation", drop("recommendation")),
                 ("subject kind dialogue", setd("subject", {"kind": "dialogue", "id": "x"}))],
    }
    return common + specific[slug]


def rust_like(ev, slug):
    """The event as the Rust side would serialize it: all default fields present, uuid id, nanosecond time."""
    ev = copy.deepcopy(ev)
    for field, value in DEFAULTS.get(slug, {}).items():
        ev["data"].setdefault(field, copy.deepcopy(value))
    if slug == "outcome":
        for field in ("value", "baseline", "target"):
            if field in ev["data"]:
                ev["data"][field] = float(ev["data"][field])
    ev["id"] = "01932f6e-8b7c-7d3e-9a4f-0123456789ab"
    ev["time"] = "2025-01-02T03:04:05.123456789Z"
    ev["source"] = "/validation"
    ev["partnerid"] = "validation"
    return ev


def check_schemas(validators, events, by_type):
    problems = []
    sample = {}
    for _, ev in events:
        slug = by_type.get(ev.get("type"))
        if slug and slug not in sample and not list(validators[slug].iter_errors(ev)):
            sample[slug] = ev
    for slug in SLUGS:
        if slug not in sample:
            problems.append(f"{slug}: no valid seed event to test the schema with")
            continue
        v = validators[slug]
        good = rust_like(sample[slug], slug)
        for err in v.iter_errors(good):
            problems.append(f"{slug}: Rust-style event rejected: {err.message}")
        for label, mutate in mutations(slug):
            bad = copy.deepcopy(sample[slug])
            try:
                mutate(bad)
            except KeyError:
                pass  # field absent in the sample: dropping it is a no-op, still must be valid-or-rejected below
            if v.is_valid(bad):
                problems.append(f"{slug}: schema accepts a bad event ({label})")
    return problems


def main():
    seed = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_SEED
    validators, by_type = load_validators()
    problems, counts, events = check_seed(seed, validators, by_type)
    problems += check_schemas(validators, events, by_type)
    for p in problems:
        print("FAIL", p)
    print(f"{len(events)} events in {os.path.relpath(seed, ROOT)}: " +
          ", ".join(f"{k}={counts[k]}" for k in SLUGS))
    if problems:
        print(f"{len(problems)} problem(s)")
        sys.exit(1)
    print("OK: seed valid, references resolve, schemas reject bad events")


if __name__ == "__main__":
    main()

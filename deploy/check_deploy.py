#!/usr/bin/env python3
"""Structural checks of the deploy/ files, run by deploy/check.sh.

Each sub-command checks one thing, prints what it found wrong, and exits 1 if
anything is wrong (0 if all is well). Needs Python 3 and PyYAML only.

  check_deploy.py topics    DEPLOY_DIR          topics.yaml content and policy
  check_deploy.py rust      DEPLOY_DIR REPO     topics.yaml == topics in services/events
  check_deploy.py dryrun    DEPLOY_DIR RF       stdin: `DRY_RUN=1 create-topics.sh` output
  check_deploy.py stubstate DEPLOY_DIR RF FILE  topic state left by the stub Kafka tools
  check_deploy.py compose   FILE                compose.yaml structure
  check_deploy.py k8s       DIR                 k8s/*.yaml structure
  check_deploy.py rendered  FILE                `kubectl kustomize` output
  check_deploy.py dockerfile FILE               Dockerfile essentials
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import yaml

ENTITY_TOPICS = [
    "coalition.partners.v1",
    "coalition.people.v1",
    "coalition.programmes.v1",
    "coalition.dialogues.v1",
    "coalition.recommendations.v1",
    "coalition.case-studies.v1",
    "coalition.activities.v1",
    "coalition.outcomes.v1",
    "coalition.evidence.v1",
    "coalition.sources.v1",
    "coalition.links.v1",
]
DEADLETTER = "coalition.deadletter.v1"
THIRTY_DAYS_MS = 30 * 24 * 3600 * 1000

errors: list[str] = []


def err(msg: str) -> None:
    errors.append(msg)


def expect(cond: bool, msg: str) -> bool:
    if not cond:
        err(msg)
    return cond


def load_all(path: Path) -> list:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def load_topics(deploy: Path) -> list[dict]:
    doc = yaml.safe_load((deploy / "topics.yaml").read_text())
    return doc["topics"]


def max_isr(rf: int) -> int:
    return rf - 1 if rf > 1 else 1


# --- topics.yaml ---------------------------------------------------------------


def check_topics(deploy: Path) -> None:
    doc = yaml.safe_load((deploy / "topics.yaml").read_text())
    if not expect(isinstance(doc, dict) and isinstance(doc.get("topics"), list), "topics.yaml: no `topics:` list"):
        return
    topics = doc["topics"]
    names = [t.get("name") for t in topics]
    expect(len(names) == len(set(names)), f"topics.yaml: duplicate names {names}")
    expect(
        sorted(names) == sorted(ENTITY_TOPICS + [DEADLETTER]),
        f"topics.yaml: topics {sorted(names)} != expected {sorted(ENTITY_TOPICS + [DEADLETTER])}",
    )
    for t in topics:
        n = t.get("name")
        expect(set(t) == {"name", "partitions", "replicationFactor", "configs"}, f"{n}: unexpected keys {sorted(t)}")
        p, rf, cfg = t.get("partitions"), t.get("replicationFactor"), t.get("configs") or {}
        expect(isinstance(p, int) and p >= 1, f"{n}: partitions must be a positive int, got {p!r}")
        expect(rf == 3, f"{n}: production replicationFactor must be 3, got {rf!r}")
        expect(all(isinstance(v, str) for v in cfg.values()), f"{n}: config values must be quoted strings: {cfg}")
        expect(cfg.get("cleanup.policy") == "delete", f"{n}: cleanup.policy must be delete (full history), got {cfg.get('cleanup.policy')!r}")
        expect(cfg.get("min.insync.replicas") == "2", f"{n}: min.insync.replicas must be 2")
        expect(cfg.get("unclean.leader.election.enable") == "false", f"{n}: unclean.leader.election.enable must be false")
        if n in ENTITY_TOPICS:
            expect(cfg.get("retention.ms") == "-1", f"{n}: retention.ms must be -1 (infinite), got {cfg.get('retention.ms')!r}")
            expect(cfg.get("retention.bytes") == "-1", f"{n}: retention.bytes must be -1, got {cfg.get('retention.bytes')!r}")
        elif n == DEADLETTER:
            expect(cfg.get("retention.ms") == str(THIRTY_DAYS_MS), f"{n}: retention.ms must be 30 days ({THIRTY_DAYS_MS})")
        if isinstance(rf, int) and "min.insync.replicas" in cfg:
            expect(int(cfg["min.insync.replicas"]) < rf, f"{n}: min.insync.replicas must be below the replication factor")


def check_rust(deploy: Path, repo: Path) -> None:
    """The topic names the Rust code uses must be exactly those in topics.yaml."""
    src = repo / "services" / "events" / "src"
    found: set[str] = set()
    for f in src.rglob("*.rs"):
        found |= set(re.findall(r'"(coalition\.[a-z0-9-]+\.v[0-9]+)"', f.read_text()))
    names = {t["name"] for t in load_topics(deploy)}
    expect(bool(found), f"no topic names found under {src}")
    expect(found == names, f"topics.yaml {sorted(names)} != Rust {sorted(found)}; missing in yaml: {sorted(found - names)}, extra in yaml: {sorted(names - found)}")


# --- create-topics.sh ----------------------------------------------------------


def expected_configs(t: dict, rf: int) -> dict[str, str]:
    cfg = {k: str(v) for k, v in (t.get("configs") or {}).items()}
    if "min.insync.replicas" in cfg:
        cfg["min.insync.replicas"] = str(min(int(cfg["min.insync.replicas"]), max_isr(rf)))
    return cfg


def parse_create(argv: list[str]) -> dict:
    out: dict = {"configs": {}}
    it = iter(argv[1:])
    for a in it:
        if a in ("--topic", "--partitions", "--replication-factor", "--bootstrap-server"):
            out[a] = next(it)
        elif a == "--config":
            k, _, v = next(it).partition("=")
            out["configs"][k] = v
        else:
            out.setdefault("flags", []).append(a)
    return out


def check_dryrun(deploy: Path, rf: int, text: str) -> None:
    cmds = [shlex.split(line[2:]) for line in text.splitlines() if line.startswith("+ ")]
    topics = {t["name"]: t for t in load_topics(deploy)}
    expect(len(cmds) == len(topics), f"dry run printed {len(cmds)} commands for {len(topics)} topics")
    seen = set()
    for argv in cmds:
        if not expect(argv and argv[0].endswith("kafka-topics.sh"), f"dry run: not a kafka-topics.sh command: {argv}"):
            continue
        c = parse_create(argv)
        n = c.get("--topic")
        seen.add(n)
        if not expect(n in topics, f"dry run: unknown topic {n}"):
            continue
        t = topics[n]
        expect({"--create", "--if-not-exists"} <= set(c.get("flags", [])), f"{n}: missing --create/--if-not-exists")
        expect(c.get("--partitions") == str(t["partitions"]), f"{n}: partitions {c.get('--partitions')} != {t['partitions']}")
        expect(c.get("--replication-factor") == str(rf), f"{n}: replication-factor {c.get('--replication-factor')} != REPLICATION={rf}")
        expect(c["configs"] == expected_configs(t, rf), f"{n}: configs {c['configs']} != {expected_configs(t, rf)}")
    expect(seen == set(topics), f"dry run: topics not created: {sorted(set(topics) - seen)}")


def check_stubstate(deploy: Path, rf: int, state: Path) -> None:
    """The stub tools record `name partitions rf k=v,...` per topic."""
    topics = {t["name"]: t for t in load_topics(deploy)}
    got = {}
    for line in state.read_text().splitlines():
        name, parts, srf, cfg = (line.split(" ") + ["", "", "", ""])[:4]
        got[name] = (parts, srf, dict(kv.split("=", 1) for kv in cfg.split(",") if kv))
    expect(set(got) == set(topics), f"stub Kafka has {sorted(got)}, expected {sorted(topics)}")
    for n, t in topics.items():
        if n in got:
            parts, srf, cfg = got[n]
            expect(parts == str(t["partitions"]) and srf == str(rf), f"{n}: stub has partitions={parts} rf={srf}")
            expect(cfg == expected_configs(t, rf), f"{n}: stub configs {cfg} != {expected_configs(t, rf)}")


# --- compose.yaml ----------------------------------------------------------------


def env_of(svc: dict) -> dict:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def ports_of(svc: dict) -> list[str]:
    out = []
    for p in svc.get("ports") or []:
        out.append(f"{p.get('published')}:{p.get('target')}" if isinstance(p, dict) else str(p))
    return out


def check_compose(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    svcs = doc.get("services") or {}
    for name in ("kafka", "topics", "coalition"):
        expect(name in svcs, f"compose: service {name} missing")
    if errors:
        return
    kafka, topics, app = svcs["kafka"], svcs["topics"], svcs["coalition"]
    base = path.parent

    expect(kafka.get("image") == "apache/kafka:3.9.0", f"compose: kafka image is {kafka.get('image')!r}")
    ke = env_of(kafka)
    for k, v in {
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": f"{ke.get('KAFKA_NODE_ID')}@kafka:9093",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
    }.items():
        expect(ke.get(k) == v, f"compose: kafka {k}={ke.get(k)!r}, want {v!r}")
    expect(bool(ke.get("CLUSTER_ID")), "compose: kafka CLUSTER_ID missing")
    expect("PLAINTEXT://kafka:9092" in (ke.get("KAFKA_ADVERTISED_LISTENERS") or ""), "compose: kafka must advertise PLAINTEXT://kafka:9092")
    expect(any(str(v).split(":")[-1] == "/var/lib/kafka/data" for v in kafka.get("volumes") or []), "compose: kafka data volume missing")
    expect(ke.get("KAFKA_LOG_DIRS") == "/var/lib/kafka/data", "compose: KAFKA_LOG_DIRS must be the volume path")
    expect("test" in (kafka.get("healthcheck") or {}), "compose: kafka healthcheck missing")

    expect(topics.get("image") == kafka.get("image"), "compose: topics must use the kafka image")
    expect((topics.get("depends_on") or {}).get("kafka", {}).get("condition") == "service_healthy", "compose: topics must wait for a healthy kafka")
    te = env_of(topics)
    expect(te.get("BOOTSTRAP") == "kafka:9092" and te.get("REPLICATION") == "1", f"compose: topics env {te}")
    mounts = {str(v).split(":")[0]: str(v).split(":")[1] for v in topics.get("volumes") or []}
    for f in ("create-topics.sh", "topics.yaml"):
        src = f"./{f}"
        expect(src in mounts, f"compose: topics must mount {src}")
        expect((base / f).is_file(), f"compose: {base / f} does not exist")
    entry = " ".join(topics.get("entrypoint") or [])
    expect(mounts.get("./create-topics.sh", "?") in entry, f"compose: topics entrypoint {entry!r} does not run the mounted script")
    expect(te.get("TOPICS_FILE") == mounts.get("./topics.yaml"), "compose: TOPICS_FILE is not the mounted topics.yaml")

    build = app.get("build") or {}
    expect(build.get("context") == "..", f"compose: coalition build context {build.get('context')!r}")
    expect(build.get("dockerfile") == "deploy/Dockerfile", f"compose: coalition dockerfile {build.get('dockerfile')!r}")
    expect((base / ".." / "deploy" / "Dockerfile").is_file(), "compose: deploy/Dockerfile missing")
    expect((app.get("depends_on") or {}).get("topics", {}).get("condition") == "service_completed_successfully",
           "compose: coalition must depend on topics completing successfully")
    ae = env_of(app)
    for k, v in {"COALITION_KAFKA_BROKERS": "kafka:9092", "COALITION_LISTEN": "0.0.0.0:8080", "COALITION_DATA_DIR": "/data"}.items():
        expect(ae.get(k) == v, f"compose: coalition {k}={ae.get(k)!r}, want {v!r}")
    expect(any(p.endswith(":8080") for p in ports_of(app)), f"compose: coalition must publish 8080, has {ports_of(app)}")
    expect(any(str(v).split(":")[-1] == "/data" for v in app.get("volumes") or []), "compose: coalition /data volume missing")
    hc = " ".join(map(str, (app.get("healthcheck") or {}).get("test") or []))
    expect("/healthz" in hc, f"compose: coalition healthcheck {hc!r} does not hit /healthz")
    declared = set((doc.get("volumes") or {}).keys())
    for svc in svcs.values():
        for v in svc.get("volumes") or []:
            src = str(v).split(":")[0]
            if not src.startswith((".", "/")):
                expect(src in declared, f"compose: named volume {src} not declared")


# --- Kubernetes ---------------------------------------------------------------


def find(docs: list, kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"].startswith(name))]


def check_workloads(docs: list, where: str) -> None:
    for d in docs:
        expect(all(k in d for k in ("apiVersion", "kind", "metadata")), f"{where}: object without apiVersion/kind/metadata: {str(d)[:80]}")
        expect(bool((d.get("metadata") or {}).get("name")), f"{where}: {d.get('kind')} without a name")

    sts = find(docs, "StatefulSet", "coalition")
    if expect(len(sts) == 1, f"{where}: want one StatefulSet coalition"):
        s = sts[0]["spec"]
        expect(s.get("replicas") == 2, f"{where}: StatefulSet replicas {s.get('replicas')}")
        pod = s["template"]["spec"]
        expect(s["selector"]["matchLabels"].items() <= s["template"]["metadata"]["labels"].items(), f"{where}: selector does not match pod labels")
        vct = [v["metadata"]["name"] for v in s.get("volumeClaimTemplates") or []]
        expect(vct == ["data"], f"{where}: volumeClaimTemplates {vct}")
        c = pod["containers"][0]
        expect(any(m["mountPath"] == "/data" and m["name"] in vct for m in c.get("volumeMounts") or []), f"{where}: /data not mounted from the PVC")
        env = {e["name"]: e for e in c.get("env") or []}
        fr = {n: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for n, e in env.items()}
        group = env.get("COALITION_CONSUMER_GROUP", {})
        pod_vars = [n for n, p in fr.items() if p == "metadata.name"]
        expect(
            fr.get("COALITION_CONSUMER_GROUP") == "metadata.name"
            or any(f"$({n})" in (group.get("value") or "") for n in pod_vars),
            f"{where}: COALITION_CONSUMER_GROUP must come from the pod name (fieldRef metadata.name)",
        )
        order = list(env)
        for n in re.findall(r"\$\((\w+)\)", group.get("value") or ""):
            expect(n in order and order.index(n) < order.index("COALITION_CONSUMER_GROUP"), f"{where}: $({n}) must be defined before COALITION_CONSUMER_GROUP")
        port_names = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
        expect(port_names.get("http") == 8080, f"{where}: container port http:8080 missing")
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            got = (c.get(probe) or {}).get("httpGet", {}).get("path")
            expect(got == path, f"{where}: {probe} path {got!r}, want {path}")
        res = c.get("resources") or {}
        expect(bool(res.get("requests")) and bool(res.get("limits")), f"{where}: resources requests/limits missing")
        refs = [e["configMapRef"]["name"] for e in c.get("envFrom") or [] if "configMapRef" in e]
        expect(bool(refs), f"{where}: StatefulSet does not read the ConfigMap")
        svc_name = s.get("serviceName")
        expect(bool(find(docs, "Service", svc_name)), f"{where}: serviceName {svc_name} has no Service")

    svcs = [d for d in find(docs, "Service") if (d["spec"].get("type") or "ClusterIP") == "ClusterIP" and d["spec"].get("clusterIP") != "None"]
    if expect(len(svcs) == 1, f"{where}: want one ClusterIP Service, got {len(svcs)}"):
        sp = svcs[0]["spec"]
        expect(any(p["port"] == 8080 for p in sp["ports"]), f"{where}: Service port 8080 missing")
        if sts:
            expect(sp["selector"].items() <= sts[0]["spec"]["template"]["metadata"]["labels"].items(), f"{where}: Service selector matches no pod")

    jobs = find(docs, "Job")
    if expect(len(jobs) == 1, f"{where}: want one topics Job"):
        j = jobs[0]["spec"]["template"]["spec"]
        c = j["containers"][0]
        expect(c["image"].startswith("apache/kafka:"), f"{where}: Job image {c['image']}")
        expect(any("create-topics.sh" in a for a in (c.get("command") or []) + (c.get("args") or [])), f"{where}: Job does not run create-topics.sh")
        expect(j.get("restartPolicy") in ("OnFailure", "Never"), f"{where}: Job restartPolicy")
        env = {e["name"] for e in c.get("env") or []}
        expect({"BOOTSTRAP", "REPLICATION"} <= env, f"{where}: Job env {env} lacks BOOTSTRAP/REPLICATION")
        cms = [v["configMap"]["name"] for v in j.get("volumes") or [] if "configMap" in v]
        expect(bool(cms), f"{where}: Job mounts no ConfigMap with the script")

    for cm_name in {e["configMapRef"]["name"] for d in sts for e in d["spec"]["template"]["spec"]["containers"][0].get("envFrom") or []}:
        cms = find(docs, "ConfigMap", cm_name)
        if expect(bool(cms), f"{where}: ConfigMap {cm_name} missing"):
            data = cms[0].get("data") or {}
            expect(bool(data.get("COALITION_KAFKA_BROKERS")), f"{where}: ConfigMap has no COALITION_KAFKA_BROKERS")
            expect(all(isinstance(v, str) for v in data.values()), f"{where}: ConfigMap values must be strings")


def check_k8s(k8s: Path) -> None:
    kust = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    expect(kust.get("kind") == "Kustomization", "kustomization.yaml: kind")
    docs = []
    for r in kust.get("resources") or []:
        f = k8s / r
        if expect(f.is_file(), f"kustomization.yaml: resource {r} does not exist"):
            docs += load_all(f)
    for g in kust.get("configMapGenerator") or []:
        for f in g.get("files") or []:
            expect((k8s / f.split("=")[-1]).is_file(), f"kustomization.yaml: generator file {f} does not exist")
    listed = {k8s / r for r in kust.get("resources") or []}
    for f in sorted(k8s.glob("*.yaml")):
        load_all(f)  # every file parses
        expect(f.name == "kustomization.yaml" or f in listed, f"{f.name} is not listed in kustomization.yaml resources")
    expect(bool(find(docs, "Namespace")), "k8s: Namespace missing")
    check_workloads(docs, "k8s")


def check_rendered(path: Path) -> None:
    docs = load_all(path)
    check_workloads(docs, "rendered")
    ns = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    expect(len(ns) == 1 and None not in ns, f"rendered: objects in namespaces {ns}")
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for d in docs:
        if d["kind"] in ("StatefulSet", "Job"):
            pod = d["spec"]["template"]["spec"]
            refs = [v["configMap"]["name"] for v in pod.get("volumes") or [] if "configMap" in v]
            for c in pod["containers"]:
                refs += [e["configMapRef"]["name"] for e in c.get("envFrom") or [] if "configMapRef" in e]
                refs += [e["valueFrom"]["configMapKeyRef"]["name"] for e in c.get("env") or [] if "configMapKeyRef" in e.get("valueFrom", {})]
            for r in refs:
                expect(("ConfigMap", r) in names, f"rendered: {d['kind']} refers to ConfigMap {r}, which is not rendered")


def check_dockerfile(path: Path) -> None:
    text = path.read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
    expect(froms[:1] == ["rust:1-bookworm"], f"Dockerfile: builder is {froms[:1]}")
    expect(froms[-1:] == ["debian:bookworm-slim"], f"Dockerfile: runtime is {froms[-1:]}")
    expect(bool(re.search(r"cargo build --release --locked -p coalition", text)), "Dockerfile: cargo build --release --locked -p coalition missing")
    for pkg in ("cmake", "clang", "libclang-dev"):
        expect(re.search(rf"apt-get install[^\n]*\b{re.escape(pkg)}\b", text) is not None, f"Dockerfile: builder does not install {pkg}")
    expect("ca-certificates" in text, "Dockerfile: runtime lacks ca-certificates")
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    expect(bool(users) and users[-1].split(":")[0] not in ("root", "0"), f"Dockerfile: final USER is {users[-1:]}")
    expect(re.search(r"^EXPOSE\s+8080\b", text, re.M) is not None, "Dockerfile: EXPOSE 8080 missing")
    expect(re.search(r'^VOLUME\s+\[?"?/data', text, re.M) is not None, "Dockerfile: VOLUME /data missing")
    expect(re.search(r'^ENTRYPOINT\s+\["coalition"\]', text, re.M) is not None, "Dockerfile: ENTRYPOINT [\"coalition\"] missing")
    expect(re.search(r'^CMD\s+\["serve"\]', text, re.M) is not None, "Dockerfile: CMD [\"serve\"] missing")
    ignore = path.with_name(path.name + ".dockerignore")
    expect(ignore.is_file() and "target" in ignore.read_text().split(), f"{ignore.name} missing or does not exclude target")


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, a = argv[1], Path(argv[2])
    try:
        if cmd == "topics":
            check_topics(a)
        elif cmd == "rust":
            check_rust(a, Path(argv[3]))
        elif cmd == "dryrun":
            check_dryrun(a, int(argv[3]), sys.stdin.read())
        elif cmd == "stubstate":
            check_stubstate(a, int(argv[3]), Path(argv[4]))
        elif cmd == "compose":
            check_compose(a)
        elif cmd == "k8s":
            check_k8s(a)
        elif cmd == "rendered":
            check_rendered(a)
        elif cmd == "dockerfile":
            check_dockerfile(a)
        else:
            print(f"unknown check {cmd}", file=sys.stderr)
            return 2
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        err(f"{cmd}: {type(e).__name__}: {e}")
    for e in errors:
        print(f"  {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

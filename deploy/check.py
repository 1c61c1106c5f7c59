"""Checks the deployment files offline (run by scripts/test.sh):

- deploy/k8s: every manifest in the kustomization validates against the
  Kubernetes schemas bundled in `kubernetes-validate`; the placeholder Secret
  stays out of the kustomization; each workload reads the ConfigMap and the
  Secret, listens where the ConfigMap binds, and probes /readyz and /healthz;
  the ConfigMap holds exactly the non-secret settings of deploy/example.env.
- docker-compose.yml: ports published on 127.0.0.1 only, host.docker.internal
  mapped, WEBHOOK_SECRET_KEY required (from .env).
- deploy/prometheus/alerts.yml and deploy/grafana/*.json: the rule and panel
  structure, and every PromQL expression parses. (That the metric names exist
  is checked against the running services by the dispatcher's tests.)

    python3 -m venv .venv && .venv/bin/pip install -r deploy/requirements.txt
    .venv/bin/python deploy/check.py
"""

import json
import pathlib
import re
import sys

import kubernetes_validate
import promql_parser
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
# Settings that live in the Secret, not in the ConfigMap.
SECRET_SETTINGS = {"WEBHOOK_SECRET_KEY", "DATABASE_URL", "AMQP_URL"}
K8S_VERSION = "1.30.0"

failures = []


def fail(message):
    failures.append(message)


def documents(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def check_k8s():
    kustomization = documents(K8S / "kustomization.yaml")[0]
    resources = kustomization.get("resources", [])
    if "secret.yaml" in resources:
        fail("k8s: secret.yaml (placeholders) must not be in the kustomization: apply -k would overwrite the real secret")
    manifests = {}
    for name in resources:
        path = K8S / name
        if not path.exists():
            fail(f"k8s: kustomization lists {name}, which does not exist")
            continue
        for doc in documents(path):
            try:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as err:
                fail(f"k8s: {name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}: {err.message}")
            manifests[(doc["kind"], doc["metadata"]["name"])] = doc
    # The example Secret still has to be a valid Secret with the right keys.
    for doc in documents(K8S / "secret.yaml"):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        if set(doc.get("stringData", {})) != SECRET_SETTINGS:
            fail(f"k8s: secret.yaml should hold exactly {sorted(SECRET_SETTINGS)}")
        secret_name = doc["metadata"]["name"]

    config = manifests.get(("ConfigMap", "webhooks-config"))
    if config is None:
        fail("k8s: no ConfigMap webhooks-config in the kustomization")
        return
    settings = set(config["data"])
    example = {
        line.split("=", 1)[0]
        for line in (ROOT / "deploy" / "example.env").read_text().splitlines()
        if re.match(r"^[A-Z][A-Z0-9_]*=", line)
    }
    if settings & SECRET_SETTINGS:
        fail(f"k8s: config.yaml holds secrets {sorted(settings & SECRET_SETTINGS)}: they belong in the Secret")
    if settings != example - SECRET_SETTINGS:
        fail(
            "k8s: config.yaml and deploy/example.env list different settings: "
            f"only in config.yaml {sorted(settings - example)}, "
            f"only in example.env {sorted(example - SECRET_SETTINGS - settings)}"
        )

    binds = {"webhooks-ingest": "INGEST_BIND", "webhooks-dispatcher": "DISPATCHER_BIND"}
    workloads = [doc for (kind, _), doc in manifests.items() if kind in ("Deployment", "Job")]
    if {doc["metadata"]["name"] for doc in workloads} != {"webhooks-ingest", "webhooks-dispatcher", "webhooks-migrate"}:
        fail("k8s: expected the Deployments webhooks-ingest and webhooks-dispatcher and the Job webhooks-migrate")
    for doc in workloads:
        name = doc["metadata"]["name"]
        for container in doc["spec"]["template"]["spec"]["containers"]:
            sources = {
                (("configMap" if "configMapRef" in s else "secret"), (s.get("configMapRef") or s.get("secretRef"))["name"])
                for s in container.get("envFrom", [])
            }
            if sources != {("configMap", "webhooks-config"), ("secret", secret_name)}:
                fail(f"k8s: {name} must read the ConfigMap webhooks-config and the Secret {secret_name} (envFrom)")
            if name not in binds:
                continue
            port = int(config["data"][binds[name]].rsplit(":", 1)[1])
            ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
            if port not in ports.values():
                fail(f"k8s: {name} listens on {port} ({binds[name]}) but declares container ports {ports}")
            for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                http = container.get(probe, {}).get("httpGet", {})
                target = http.get("port")
                if http.get("path") != path or ports.get(target, target) != port:
                    fail(f"k8s: {name}'s {probe} must GET {path} on port {port}")
            annotations = doc["spec"]["template"]["metadata"].get("annotations", {})
            if annotations.get("prometheus.io/port") != str(port):
                fail(f"k8s: {name}'s prometheus.io/port annotation must be {port}")


def check_compose():
    compose = documents(ROOT / "docker-compose.yml")[0]
    for name, service in compose["services"].items():
        for mapping in service.get("ports", []):
            if not str(mapping).startswith("127.0.0.1:"):
                fail(f"compose: {name} publishes {mapping} on every interface; bind it to 127.0.0.1")
        if name in ("ingest", "dispatcher"):
            if "host.docker.internal:host-gateway" not in service.get("extra_hosts", []):
                fail(f"compose: {name} needs extra_hosts host.docker.internal:host-gateway")
            key = service["environment"].get("WEBHOOK_SECRET_KEY", "")
            if not key.startswith("${WEBHOOK_SECRET_KEY:?"):
                fail(f"compose: {name} must require WEBHOOK_SECRET_KEY (from .env)")
    if ".env" not in (ROOT / ".gitignore").read_text().split():
        fail("compose: .env (it holds WEBHOOK_SECRET_KEY) must be git-ignored")


def parses(where, expr):
    try:
        promql_parser.parse(expr)
    except Exception as err:  # the parser raises plain exceptions
        fail(f"{where}: PromQL does not parse: {err}: {expr!r}")


def check_alerts():
    rules = documents(ROOT / "deploy" / "prometheus" / "alerts.yml")[0]
    seen = set()
    for group in rules["groups"]:
        if not group.get("name") or not group.get("rules"):
            fail("alerts: every group needs a name and rules")
        for rule in group["rules"]:
            alert = rule.get("alert")
            if not alert or alert in seen:
                fail(f"alerts: missing or repeated alert name {alert!r}")
            seen.add(alert)
            if not rule.get("labels", {}).get("severity"):
                fail(f"alerts: {alert} has no severity label")
            if not rule.get("annotations", {}).get("summary"):
                fail(f"alerts: {alert} has no summary")
            if "for" in rule and not re.fullmatch(r"\d+[smhd]", str(rule["for"])):
                fail(f"alerts: {alert}: bad duration for: {rule['for']!r}")
            parses(f"alerts: {alert}", rule["expr"])


def check_dashboards():
    for path in sorted((ROOT / "deploy" / "grafana").glob("*.json")):
        dashboard = json.loads(path.read_text())
        if not dashboard.get("uid") or not dashboard.get("title"):
            fail(f"grafana: {path.name} needs a uid and a title")
        targets = [t for p in dashboard["panels"] for t in p.get("targets", [])]
        if not targets:
            fail(f"grafana: {path.name} has no queries")
        for target in targets:
            parses(f"grafana: {path.name}", target["expr"])


for check in (check_k8s, check_compose, check_alerts, check_dashboards):
    check()
for message in failures:
    print(f"FAIL {message}", file=sys.stderr)
print(f"deploy/check.py: {'failed' if failures else 'all deployment files pass'} ({len(failures)} problems)")
sys.exit(1 if failures else 0)

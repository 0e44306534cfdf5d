"""The chart's values.schema.json, built here so that values passed through to
Kubernetes (affinity, tolerations, resources, security contexts, ...) use the
real, strict Kubernetes schemas (from the pinned kubernetes-validate package)
and every object at every level has `additionalProperties` set.

`python3 values_schema.py --write` rewrites charts/roomcast/values.schema.json;
scripts/check-chart fails when the committed file differs from `build()`.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

CHART = Path(__file__).resolve().parents[2] / "charts" / "roomcast"
SCHEMA_PATH = CHART / "values.schema.json"
# Kubernetes version whose strict schemas the pass-through values use.
K8S_SCHEMA_VERSION = "v1.33.0"

CORE = "io.k8s.api.core.v1."


def s(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def i(description: str, minimum: int | None = None, maximum: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "integer", "description": description}
    if minimum is not None:
        out["minimum"] = minimum
    if maximum is not None:
        out["maximum"] = maximum
    return out


def b(description: str) -> dict[str, Any]:
    return {"type": "boolean", "description": description}


def obj(description: str, properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "object",
        "description": description,
        "additionalProperties": False,
        "properties": properties,
    }
    if required:
        out["required"] = required
    return out


def string_map(description: str) -> dict[str, Any]:
    return {"type": "object", "description": description, "additionalProperties": {"type": "string"}}


def k8s(name: str, description: str) -> dict[str, Any]:
    return {"$ref": f"#/$defs/{name}", "description": description}


def k8s_list(name: str, description: str) -> dict[str, Any]:
    return {"type": "array", "description": description, "items": {"$ref": f"#/$defs/{name}"}}


PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
DURATION = {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"}


def skeleton() -> dict[str, Any]:
    """The chart's own values, mirroring values.yaml."""
    image_tag = s("Image tag; empty means the chart's appVersion.")
    image_digest = s("Image digest; used instead of the tag when set.", pattern="^([a-z0-9]+:[a-f0-9]{32,})?$")
    relabelings = {
        "type": "array",
        "description": "prometheus-operator RelabelConfig list.",
        "items": {"type": "object", "additionalProperties": True},
    }
    monitor = {
        "enabled": b("Create the monitor (needs the prometheus-operator CRDs)."),
        "interval": {**DURATION, "description": "Scrape interval."},
        "scrapeTimeout": {**DURATION, "description": "Scrape timeout."},
        "labels": string_map("Extra labels of the monitor."),
        "honorLabels": b("Keep the series' labels on clashes with the target's."),
        "relabelings": relabelings,
        "metricRelabelings": relabelings,
        "endpointAdditionalProperties": {
            "type": "object",
            "description": "Extra settings merged into the scrape endpoint (prometheus-operator's schema).",
            "additionalProperties": True,
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "roomcast chart values",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "nameOverride": s("Overrides the chart name."),
            "fullnameOverride": s("Overrides the full name prefix."),
            "image": obj(
                "Operator image.",
                {
                    "repository": s("Operator image repository.", minLength=1),
                    "tag": image_tag,
                    "digest": image_digest,
                    "pullPolicy": s("Image pull policy.", enum=["Always", "IfNotPresent", "Never"]),
                },
                ["repository"],
            ),
            "gatewayImage": obj(
                "Default gateway image of RealtimeClusters without spec.image.",
                {
                    "repository": s("Gateway image repository.", minLength=1),
                    "tag": image_tag,
                    "digest": image_digest,
                },
                ["repository"],
            ),
            "imagePullSecrets": k8s_list(CORE + "LocalObjectReference", "Image pull secrets."),
            "replicaCount": i("Operator replicas.", minimum=1),
            "leaderElection": obj(
                "Leader election through a Lease.",
                {
                    "enabled": b("Elect a leader; required for more than one replica."),
                    "leaseName": s("Lease name.", minLength=1, maxLength=253),
                },
            ),
            "watchNamespace": s(
                "Namespace to manage; empty for all namespaces.",
                pattern="^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$",
                maxLength=63,
            ),
            "operator": obj(
                "Operator settings.",
                {
                    "syncPeriodSeconds": i("Resync and autoscaling period in seconds.", minimum=1),
                    "logLevel": s("Log filter (RUST_LOG syntax).", minLength=1),
                    "metricsPort": {**PORT, "description": "Port of /metrics and /healthz."},
                    "extraEnv": k8s_list(CORE + "EnvVar", "Extra environment variables."),
                },
            ),
            "serviceAccount": obj(
                "The operator's ServiceAccount.",
                {
                    "create": b("Create it."),
                    "name": s("Its name; empty for the default."),
                    "annotations": string_map("Its annotations."),
                },
            ),
            "rbac": obj("RBAC objects.", {"create": b("Create the Role/ClusterRole and bindings.")}),
            "podAnnotations": string_map("Extra pod annotations."),
            "podLabels": string_map("Extra pod labels."),
            "podSecurityContext": k8s(CORE + "PodSecurityContext", "Pod security context."),
            "securityContext": k8s(CORE + "SecurityContext", "Container security context."),
            "resources": k8s(CORE + "ResourceRequirements", "Container resources."),
            "nodeSelector": string_map("Node selector."),
            "tolerations": k8s_list(CORE + "Toleration", "Tolerations."),
            "affinity": k8s(CORE + "Affinity", "Affinity; empty for soft anti-affinity across nodes."),
            "topologySpreadConstraints": k8s_list(CORE + "TopologySpreadConstraint", "Topology spread."),
            "priorityClassName": s("PriorityClass name."),
            "podDisruptionBudget": obj(
                "PodDisruptionBudget of the operator pods (only with more than one replica).",
                {
                    "enabled": b("Create it when replicaCount > 1."),
                    "maxUnavailable": i("Pods a voluntary disruption may take at once.", minimum=1),
                },
            ),
            "metrics": obj(
                "Metrics collection.",
                {
                    "service": obj(
                        "The operator's metrics Service.",
                        {"enabled": b("Create it."), "port": {**PORT, "description": "Service port."}},
                    ),
                    "serviceMonitor": obj("ServiceMonitor for the operator.", monitor),
                    "podMonitor": obj(
                        "PodMonitor for the gateway pods.",
                        {
                            **monitor,
                            "namespaces": {
                                "type": "array",
                                "description": "Namespaces to scrape; empty for any.",
                                "items": {"type": "string", "minLength": 1},
                            },
                            "jobLabel": s("Pod label whose value names the job; empty: namespace/name of the PodMonitor."),
                        },
                    ),
                },
            ),
            "prometheusRule": obj(
                "PrometheusRule with Roomcast's alerts.",
                {
                    "enabled": b("Create it (needs the prometheus-operator CRDs)."),
                    "labels": string_map("Extra labels of the PrometheusRule."),
                    "gatewayJob": s("job label of the gateway scrapes.", minLength=1),
                    "operatorJob": s("job label of the operator scrapes; empty: the metrics Service's name."),
                },
            ),
            "grafanaDashboard": obj(
                "ConfigMap with the Grafana dashboard.",
                {
                    "enabled": b("Create it."),
                    "namespace": s("Its namespace; empty for the release namespace.", maxLength=63),
                    "sidecarLabel": s("Label the Grafana sidecar selects by.", minLength=1),
                    "sidecarLabelValue": s("Value of that label."),
                    "labels": string_map("Extra labels of the ConfigMap."),
                    "annotations": string_map("Annotations of the ConfigMap."),
                },
            ),
            "networkPolicy": obj(
                "NetworkPolicy of the operator pods.",
                {
                    "enabled": b("Create it."),
                    "metricsFrom": k8s_list(
                        "io.k8s.api.networking.v1.NetworkPolicyPeer", "Sources allowed to scrape metrics."
                    ),
                    "apiServer": k8s_list(
                        "io.k8s.api.networking.v1.NetworkPolicyPeer", "API server destinations; empty for any."
                    ),
                    "apiServerPorts": {
                        "type": "array",
                        "description": "API server ports.",
                        "minItems": 1,
                        "items": PORT,
                    },
                },
            ),
            "exampleCluster": obj(
                "Example RealtimeCluster.",
                {
                    "enabled": b("Install it."),
                    "name": s("Its name.", pattern="^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", maxLength=50),
                    "natsUrl": s("NATS URL.", minLength=1),
                    "minReplicas": i("Fewest gateway pods.", minimum=1),
                    "maxReplicas": i("Most gateway pods.", minimum=1),
                    "targetConnectionsPerPod": i("Connections per pod to aim at.", minimum=1),
                    "serviceType": s("Gateway Service type.", enum=["ClusterIP", "NodePort", "LoadBalancer"]),
                    "historyReplicas": i("Replicas of each JetStream history stream.", minimum=1, maximum=5),
                    "namespaces": {
                        "type": "array",
                        "description": "Room namespaces and their options (spec.namespaces).",
                        "items": obj(
                            "One room namespace.",
                            {
                                "name": s("Namespace name; empty for the default.", pattern="^[A-Za-z0-9_@/-]{0,127}$"),
                                "historySize": i("Messages kept per room.", minimum=0, maximum=10000),
                                "historyTtlSeconds": i("Seconds a kept message stays.", minimum=1, maximum=31536000),
                                "clientPublish": b("Whether clients may publish."),
                                "presenceEvents": b("Whether members may ask for joined/left events."),
                            },
                            required=["name"],
                        ),
                    },
                },
            ),
        },
    }


REF = re.compile(r"^(?:/api/_definitions\.json)?#/\$defs/(.+)$")


def _refs(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                m = REF.match(value)
                if m:
                    found.append(m.group(1))
            else:
                found.extend(_refs(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_refs(value))
    return found


def _rewrite(node: Any) -> Any:
    """Points the Kubernetes definitions' references into this document."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and REF.match(value):
                out[key] = "#/$defs/" + REF.match(value).group(1)  # type: ignore[union-attr]
            else:
                out[key] = _rewrite(value)
        return out
    if isinstance(node, list):
        return [_rewrite(v) for v in node]
    return node


def k8s_definitions() -> dict[str, Any]:
    from importlib import resources

    path = resources.files("kubernetes_validate").joinpath(
        f"kubernetes-json-schema/{K8S_SCHEMA_VERSION}-local-strict/_definitions.json"
    )
    return json.loads(path.read_text())["$defs"]


def build() -> dict[str, Any]:
    """The full schema: the skeleton plus the Kubernetes definitions it reaches."""
    schema = skeleton()
    available = k8s_definitions()
    wanted = sorted(set(_refs(schema)))
    defs: dict[str, Any] = {}
    while wanted:
        name = wanted.pop()
        if name in defs:
            continue
        if name not in available:
            raise SystemExit(f"values_schema: unknown Kubernetes definition {name}")
        defs[name] = _rewrite(available[name])
        wanted.extend(r for r in _refs(defs[name]) if r not in defs)
    schema["$defs"] = dict(sorted(defs.items()))
    return schema


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


def open_objects(node: Any, path: str = "") -> list[str]:
    """Paths of object schemas that leave `additionalProperties` unset (open to typos)."""
    found: list[str] = []
    if isinstance(node, dict):
        types = node.get("type")
        is_object = types == "object" or (isinstance(types, list) and "object" in types)
        if is_object and "additionalProperties" not in node and "$ref" not in node:
            found.append(path or "/")
        for key, value in node.items():
            found.extend(open_objects(value, f"{path}/{key}"))
    elif isinstance(node, list):
        for n, value in enumerate(node):
            found.extend(open_objects(value, f"{path}/{n}"))
    return found


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        SCHEMA_PATH.write_text(render(build()))
        print(f"wrote {SCHEMA_PATH}")
    else:
        print(render(build()), end="")

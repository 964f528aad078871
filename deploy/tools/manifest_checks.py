"""Checks across the objects of one rendered set, which no per-object schema can make.

Two kinds of rule:
- references resolve: a Service, PodDisruptionBudget or ServiceMonitor selects something, an HPA
  targets an existing workload, every ConfigMap / Secret / key / volume / probe port named by a pod
  exists (Secrets managed outside the set are declared with --external-secret);
- Patron's deployment contract: hardened pods with requests and limits, probes on every service,
  the single-writer services (project, relay) at one replica with the Recreate strategy, and
  ingest never scaled beyond the partitions of its input topics.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

COMPONENT = "app.kubernetes.io/component"
PARTITIONS_ANNOTATION = "patron/input-partitions"
SINGLE_WRITERS = ("project", "relay")
SERVICES = ("ingest", "project", "relay", "api")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


def ident(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def labels_of(obj: dict[str, Any]) -> dict[str, str]:
    return obj.get("metadata", {}).get("labels") or {}


def pod_template(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj.get("kind") in WORKLOAD_KINDS:
        return obj.get("spec", {}).get("template")
    return None


def selects(match_labels: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(match_labels) and all(labels.get(k) == v for k, v in match_labels.items())


def containers(pod_spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod_spec.get("initContainers") or []
    yield from pod_spec.get("containers") or []


class Checker:
    """Collects the problems of one set of objects; `run()` returns them, one line each."""

    def __init__(self, objects: list[dict[str, Any]], external_secrets: set[str]):
        self.objects = objects
        self.external_secrets = external_secrets
        self.problems: list[str] = []
        self.by_kind: dict[str, dict[str, dict[str, Any]]] = {}
        for obj in objects:
            name = obj.get("metadata", {}).get("name", "")
            self.by_kind.setdefault(obj.get("kind", ""), {})[name] = obj
        self.workloads = [o for o in objects if pod_template(o) is not None]

    def fail(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def run(self) -> list[str]:
        self.check_unique()
        for obj in self.workloads:
            self.check_workload(obj)
        for svc in self.by_kind.get("Service", {}).values():
            self.check_service(svc)
        for pdb in self.by_kind.get("PodDisruptionBudget", {}).values():
            self.check_pdb(pdb)
        for hpa in self.by_kind.get("HorizontalPodAutoscaler", {}).values():
            self.check_hpa(hpa)
        for monitor in self.by_kind.get("ServiceMonitor", {}).values():
            self.check_service_monitor(monitor)
        self.check_patron_contract()
        return self.problems

    def check_unique(self) -> None:
        counts = Counter(
            (o.get("kind"), o.get("metadata", {}).get("namespace"), o.get("metadata", {}).get("name"))
            for o in self.objects
        )
        for (kind, _, name), n in counts.items():
            if n > 1:
                self.fail(f"{kind}/{name}", f"defined {n} times")

    # --- references -------------------------------------------------------------------------

    def config_exists(self, kind: str, name: str, key: str | None, optional: bool, where: str) -> None:
        if kind == "Secret" and name in self.external_secrets:
            return
        obj = self.by_kind.get(kind, {}).get(name)
        if obj is None:
            if not optional:
                self.fail(where, f"{kind} {name!r} is not in the set (declare a Secret managed "
                          "elsewhere with --external-secret)")
            return
        if key is not None:
            keys = set((obj.get("data") or {}).keys()) | set((obj.get("stringData") or {}).keys())
            if key not in keys and not optional:
                self.fail(where, f"{kind} {name!r} has no key {key!r} (keys: {sorted(keys)})")

    def check_workload(self, obj: dict[str, Any]) -> None:
        where = ident(obj)
        template = pod_template(obj) or {}
        spec = template.get("spec", {})
        selector = obj.get("spec", {}).get("selector", {}).get("matchLabels")
        if obj["kind"] != "Job" and not selects(selector or {}, labels_of(template)):
            self.fail(where, "spec.selector.matchLabels does not match the pod template labels")
        account = spec.get("serviceAccountName")
        if account and account != "default" and account not in self.by_kind.get("ServiceAccount", {}):
            self.fail(where, f"ServiceAccount {account!r} is not in the set")
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        for volume in volumes.values():
            self.check_volume(volume, where)
        for c in containers(spec):
            self.check_container(c, volumes, f"{where} container {c.get('name')}")
        self.check_hardening(template, where)

    def check_volume(self, volume: dict[str, Any], where: str) -> None:
        sources = [volume]
        if "projected" in volume:
            sources = volume["projected"].get("sources") or []
        for source in sources:
            for field, kind, name_field in (("configMap", "ConfigMap", "name"), ("secret", "Secret", "secretName")):
                ref = source.get(field)
                if ref is None:
                    continue
                name = ref.get(name_field) or ref.get("name")
                optional = bool(ref.get("optional"))
                self.config_exists(kind, name, None, optional, f"{where} volume {volume['name']}")
                for item in ref.get("items") or []:
                    self.config_exists(kind, name, item["key"], optional, f"{where} volume {volume['name']}")

    def check_container(self, c: dict[str, Any], volumes: dict[str, Any], where: str) -> None:
        names = [e["name"] for e in c.get("env") or []]
        for name, n in Counter(names).items():
            if n > 1:
                self.fail(where, f"env {name} is set {n} times (the last one wins silently)")
        for source in c.get("envFrom") or []:
            for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                if field in source:
                    ref = source[field]
                    self.config_exists(kind, ref["name"], None, bool(ref.get("optional")), f"{where} envFrom")
        for env in c.get("env") or []:
            value_from = env.get("valueFrom") or {}
            for field, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                if field in value_from:
                    ref = value_from[field]
                    self.config_exists(kind, ref["name"], ref["key"], bool(ref.get("optional")),
                                       f"{where} env {env['name']}")
        for mount in c.get("volumeMounts") or []:
            if mount["name"] not in volumes:
                self.fail(where, f"volumeMount {mount['name']!r} names no volume of the pod")
        port_names = [p["name"] for p in c.get("ports") or [] if "name" in p]
        port_numbers = {p["containerPort"] for p in c.get("ports") or []}
        for name, n in Counter(port_names).items():
            if n > 1:
                self.fail(where, f"port name {name!r} is used {n} times")
        for probe_name in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = c.get(probe_name) or {}
            for handler in ("httpGet", "tcpSocket", "grpc"):
                port = (probe.get(handler) or {}).get("port")
                if port is None:
                    continue
                if isinstance(port, str) and port not in port_names:
                    self.fail(where, f"{probe_name} uses port {port!r}, which the container does not name")
                if isinstance(port, int) and port not in port_numbers:
                    self.fail(where, f"{probe_name} uses port {port}, which the container does not expose")

    def pods_selected(self, match_labels: dict[str, str]) -> list[dict[str, Any]]:
        return [w for w in self.workloads if selects(match_labels, labels_of(pod_template(w) or {}))]

    def check_service(self, svc: dict[str, Any]) -> None:
        where = ident(svc)
        selector = svc.get("spec", {}).get("selector") or {}
        matched = self.pods_selected(selector)
        if not matched:
            self.fail(where, f"selector {selector} matches no pod template in the set")
        for workload in matched:
            if workload["kind"] == "Job":
                self.fail(where, f"selector also matches the pods of {ident(workload)}")
                continue
            spec = (pod_template(workload) or {}).get("spec", {})
            names = {p.get("name") for c in containers(spec) for p in c.get("ports") or []}
            numbers = {p["containerPort"] for c in containers(spec) for p in c.get("ports") or []}
            for port in svc.get("spec", {}).get("ports") or []:
                target = port.get("targetPort", port.get("port"))
                if (isinstance(target, str) and target not in names) or (
                    isinstance(target, int) and target not in numbers
                ):
                    self.fail(where, f"targetPort {target!r} is not a port of {ident(workload)}")

    def check_pdb(self, pdb: dict[str, Any]) -> None:
        where = ident(pdb)
        spec = pdb.get("spec", {})
        if ("minAvailable" in spec) == ("maxUnavailable" in spec):
            self.fail(where, "set exactly one of minAvailable and maxUnavailable")
        matched = self.pods_selected(spec.get("selector", {}).get("matchLabels") or {})
        if not matched:
            self.fail(where, "selector matches no pod template in the set")
        for workload in matched:
            replicas = workload.get("spec", {}).get("replicas")
            if replicas == 1 and not self.hpa_for(workload) and spec.get("maxUnavailable", 1) == 0:
                self.fail(where, f"blocks every drain of the single pod of {ident(workload)}")
            min_available = spec.get("minAvailable")
            if (isinstance(replicas, int) and isinstance(min_available, int)
                    and not self.hpa_for(workload) and min_available >= replicas):
                self.fail(where, f"minAvailable {min_available} >= {replicas} replicas of "
                          f"{ident(workload)}: no pod can ever be evicted")

    def hpa_for(self, workload: dict[str, Any]) -> dict[str, Any] | None:
        for hpa in self.by_kind.get("HorizontalPodAutoscaler", {}).values():
            ref = hpa.get("spec", {}).get("scaleTargetRef", {})
            if ref.get("kind") == workload["kind"] and ref.get("name") == workload["metadata"]["name"]:
                return hpa
        return None

    def check_hpa(self, hpa: dict[str, Any]) -> None:
        where = ident(hpa)
        spec = hpa.get("spec", {})
        ref = spec.get("scaleTargetRef", {})
        target = self.by_kind.get(ref.get("kind", ""), {}).get(ref.get("name", ""))
        if target is None:
            self.fail(where, f"scaleTargetRef {ref.get('kind')}/{ref.get('name')} is not in the set")
            return
        if "replicas" in target.get("spec", {}):
            self.fail(where, f"{ident(target)} sets spec.replicas: every apply would fight the autoscaler")
        if spec.get("minReplicas", 1) > spec.get("maxReplicas", 0):
            self.fail(where, "minReplicas > maxReplicas")
        for metric in spec.get("metrics") or []:
            resource = (metric.get("resource") or {}).get("name") if metric.get("type") == "Resource" else None
            if resource is None:
                continue
            for c in (pod_template(target) or {}).get("spec", {}).get("containers") or []:
                if resource not in ((c.get("resources") or {}).get("requests") or {}):
                    self.fail(where, f"scales on {resource} but container {c['name']} requests no {resource}")

    def check_service_monitor(self, monitor: dict[str, Any]) -> None:
        where = ident(monitor)
        spec = monitor.get("spec", {})
        selector = spec.get("selector", {}).get("matchLabels") or {}
        services = [s for s in self.by_kind.get("Service", {}).values() if selects(selector, labels_of(s))]
        if not services:
            self.fail(where, f"selector {selector} matches no Service in the set")
        for endpoint in spec.get("endpoints") or []:
            for svc in services:
                names = {p.get("name") for p in svc.get("spec", {}).get("ports") or []}
                if endpoint.get("port") not in names:
                    self.fail(where, f"endpoint port {endpoint.get('port')!r} is not a port of {ident(svc)}")

    # --- Patron's contract ----------------------------------------------------------------

    def check_hardening(self, template: dict[str, Any], where: str) -> None:
        spec = template.get("spec", {})
        pod_sc = spec.get("securityContext") or {}
        for c in containers(spec):
            at = f"{where} container {c.get('name')}"
            sc = c.get("securityContext") or {}
            if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
                self.fail(at, "runAsNonRoot is not true")
            if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
                self.fail(at, "runs as uid 0")
            if sc.get("readOnlyRootFilesystem") is not True:
                self.fail(at, "readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                self.fail(at, "allowPrivilegeEscalation is not false")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                self.fail(at, "capabilities.drop does not contain ALL")
            seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                self.fail(at, "seccompProfile is not RuntimeDefault")
            resources = c.get("resources") or {}
            for bound in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in (resources.get(bound) or {}):
                        self.fail(at, f"no {resource} in resources.{bound}")

    def check_patron_contract(self) -> None:
        deployments = self.by_kind.get("Deployment", {}).values()
        by_component: dict[str, list[dict[str, Any]]] = {}
        for d in deployments:
            by_component.setdefault(labels_of(d).get(COMPONENT, ""), []).append(d)
        for component in SERVICES:
            found = by_component.get(component, [])
            if len(found) != 1:
                self.fail("set", f"expected one Deployment labelled {COMPONENT}={component}, found {len(found)}")
        jobs = [j for j in self.by_kind.get("Job", {}).values() if labels_of(j).get(COMPONENT) == "migrate"]
        for job in jobs:
            args = [a for c in (pod_template(job) or {}).get("spec", {}).get("containers", []) for a in c.get("args") or []]
            if "migrate" not in args:
                self.fail(ident(job), "the migrate Job does not run `patron migrate`")
        if len(jobs) != 1:
            self.fail("set", f"expected one migrate Job ({COMPONENT}=migrate), found {len(jobs)}")
        for d in deployments:
            where = ident(d)
            component = labels_of(d).get(COMPONENT)
            for c in (pod_template(d) or {}).get("spec", {}).get("containers") or []:
                for probe in ("livenessProbe", "readinessProbe"):
                    if probe not in c:
                        self.fail(f"{where} container {c['name']}", f"has no {probe}")
            if component in SINGLE_WRITERS:
                if d.get("spec", {}).get("replicas") != 1:
                    self.fail(where, f"{component} is a single writer: spec.replicas must be 1")
                if d.get("spec", {}).get("strategy", {}).get("type") != "Recreate":
                    self.fail(where, f"{component} is a single writer: strategy must be Recreate "
                              "(a rolling update runs two writers at once)")
                if self.hpa_for(d):
                    self.fail(where, f"{component} is a single writer: it must not be autoscaled")
            if component == "ingest":
                self.check_ingest_bound(d)

    def check_ingest_bound(self, d: dict[str, Any]) -> None:
        where = ident(d)
        raw = (d.get("metadata", {}).get("annotations") or {}).get(PARTITIONS_ANNOTATION)
        try:
            partitions = int(raw)
        except (TypeError, ValueError):
            self.fail(where, f"annotation {PARTITIONS_ANNOTATION} must give the input topics' partition count")
            return
        replicas = d.get("spec", {}).get("replicas")
        if replicas is not None and replicas > partitions:
            self.fail(where, f"{replicas} replicas > {partitions} partitions: the extra consumers would idle")
        hpa = self.hpa_for(d)
        if hpa and hpa.get("spec", {}).get("maxReplicas", 0) > partitions:
            self.fail(ident(hpa), f"maxReplicas {hpa['spec']['maxReplicas']} > {partitions} input partitions "
                      f"({PARTITIONS_ANNOTATION} on {where}): the extra consumers would idle")

"""Schema validation of rendered Kubernetes objects, offline and strict.

Built-in kinds are checked with kubernetes-validate, which bundles the OpenAPI-derived JSON schemas
of every Kubernetes minor version it supports; its "strict" schemas reject unknown fields, so a
misspelled key fails instead of being dropped silently by the API server.

ServiceMonitor (a Prometheus Operator CRD) is unknown to those schemas. It is checked against the
pydantic models that cloudcoil-models-prometheus-operator generates from the operator's CRD
(types, required fields, enums, patterns), with unknown fields forbidden as well.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

import kubernetes_validate
import pydantic

# Forbid unknown fields in every cloudcoil model. This must happen before the model modules are
# imported: pydantic fixes a model's configuration when its class is created.
import cloudcoil.pydantic as _cloudcoil_pydantic

_cloudcoil_pydantic.BaseModel.model_config["extra"] = "forbid"

from cloudcoil.models.prometheus_operator import v1 as _prometheus_v1  # noqa: E402 (after the patch above)

CRD_MODELS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _prometheus_v1.ServiceMonitor,
}


def crd_source() -> str:
    """Names the package (and version) whose CRD models validate custom resources."""
    name = "cloudcoil.models.prometheus_operator"
    return f"prometheus-operator CRD models ({name} {importlib.metadata.version(name)})"


def kubernetes_validate_version() -> str:
    return kubernetes_validate.__version__


def supported_versions() -> list[str]:
    """The Kubernetes versions whose schemas kubernetes-validate bundles."""
    return kubernetes_validate.utils.all_versions()


def schema_errors(obj: dict[str, Any], kube_versions: list[str]) -> list[str]:
    """Every schema violation of `obj`, one line each; empty when it is valid."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    model = CRD_MODELS.get(key)
    if model is not None:
        try:
            model.model_validate(obj)
        except pydantic.ValidationError as error:
            return [
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
            ]
        return []
    errors = []
    for version in kube_versions:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path) or "(object)"
            errors.append(f"Kubernetes {error.version}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            errors.append(
                f"no schema for {key[1]} {key[0]} in Kubernetes {error.version}"
                " (a misspelled kind or apiVersion, an API removed in that version,"
                " or a custom resource this check has no model for)"
            )
    return errors

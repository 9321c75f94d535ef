#!/usr/bin/env bash
# Lints, renders and validates the Helm chart deploy/helm/prequal against the Kubernetes
# schemas, offline.
#
#   infra/validate-chart.sh            install missing tools, then lint, render, validate
#   infra/validate-chart.sh tools      only install the tools (helm, kubeconform, schemas)
#
# Tools land in .infra/bin (or $PREQUAL_TOOLS_DIR/bin), each from its ordinary registry:
#   helm         go install helm.sh/helm/v3/cmd/helm            (Go module proxy)
#   kubeconform  go install github.com/yannh/kubeconform/...    (Go module proxy)
#   schemas      the kubernetes-validate wheel (PyPI), which ships the Kubernetes JSON
#                schemas of every minor version; kubeconform cannot download them here.
#                Its "-local-strict" layout refers to a shared _definitions.json by an
#                absolute $id; we rewrite that reference to a relative one so kubeconform
#                resolves it as a file next to the schema.
#   KEDA         ScaledObject is a custom resource, absent from those schemas: it is
#                validated by @kubernetes-models/keda (npm), whose validators are generated
#                from KEDA's CRDs (types, enums, required fields; not unknown fields).
#
# The chart is rendered with three values files of deploy/helm/prequal/ci/ (defaults,
# production-like, HPA instead of KEDA) and validated against the oldest and the newest
# Kubernetes minor the chart supports. Rendered manifests are left in .infra/chart-render.
# Exit status: 0 when every check passes, 1 otherwise.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${PREQUAL_TOOLS_DIR:-$ROOT/.infra}"
BIN="$TOOLS_DIR/bin"
SCHEMA_DIR="$TOOLS_DIR/k8s-schemas"
NPM_DIR="$TOOLS_DIR/chart-npm"
OUT="$TOOLS_DIR/chart-render"
CHART="$ROOT/deploy/helm/prequal"

HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.8.0
K8S_SCHEMAS_PACKAGE=kubernetes-validate==1.37.0
KEDA_MODELS_PACKAGE=@kubernetes-models/keda@2.0.0
YAML_PACKAGE=yaml@2.9.1
# Chart.yaml's kubeVersion floor, and the newest minor the schema package ships.
KUBE_VERSIONS=(1.29.0 1.37.0)
RELEASE=prequal

log() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'validate-chart: %s\n' "$*" >&2
    exit 1
}

python_bin() {
    if [[ -x "$ROOT/.venv/bin/python" ]]; then
        echo "$ROOT/.venv/bin/python"
    else
        command -v python3 || die "python3 is needed to unpack the schemas"
    fi
}

# go_tool NAME VERSION PACKAGE: go install PACKAGE@VERSION into $BIN unless the binary
# there was built from that module version (go version -m reads it from the binary: a
# go-installed helm reports only "v3.22" and kubeconform "development" themselves).
go_tool() {
    local name=$1 version=$2 package=$3
    if [[ -x "$BIN/$name" ]] && command -v go >/dev/null &&
        go version -m "$BIN/$name" 2>/dev/null | awk '$1 == "mod" { print $3 }' |
        grep -qxF "$version"; then
        return 0
    fi
    command -v go >/dev/null || die "go is needed to install $name ($package@$version)"
    log "go install $package@$version"
    local start=$SECONDS
    mkdir -p "$BIN"
    GOBIN="$BIN" go install "$package@$version"
    log "$name $version installed in $((SECONDS - start)) s"
}

install_schemas() {
    local stamp="$SCHEMA_DIR/.package"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$K8S_SCHEMAS_PACKAGE" ]]; then
        return 0
    fi
    local py tmp
    py="$(python_bin)"
    tmp="$(mktemp -d)"
    log "pip download $K8S_SCHEMAS_PACKAGE (Kubernetes JSON schemas)"
    "$py" -m pip download --quiet --no-deps --dest "$tmp" "$K8S_SCHEMAS_PACKAGE"
    rm -rf "$SCHEMA_DIR"
    mkdir -p "$SCHEMA_DIR"
    "$py" - "$tmp" "$SCHEMA_DIR" "${KUBE_VERSIONS[@]}" <<'PY'
"""Unpack the strict local schemas of the wanted Kubernetes versions from the wheel."""
import json
import pathlib
import sys
import zipfile

wheel_dir, dest, *versions = sys.argv[1:]
(wheel,) = pathlib.Path(wheel_dir).glob("*.whl")
prefix = "kubernetes_validate/kubernetes-json-schema/"
with zipfile.ZipFile(wheel) as archive:
    for version in versions:
        folder = f"v{version}-local-strict"
        names = [n for n in archive.namelist() if n.startswith(f"{prefix}{folder}/")]
        if not names:
            sys.exit(f"{wheel.name} ships no schemas for Kubernetes {version}")
        out = pathlib.Path(dest, folder)
        out.mkdir(parents=True)
        for name in names:
            text = archive.read(name).decode()
            # kubeconform resolves references against the file's own location: drop the
            # absolute $id and point the shared definitions at the sibling file.
            text = text.replace('"/api/_definitions.json#', '"_definitions.json#')
            schema = json.loads(text)
            if isinstance(schema, dict):
                schema.pop("$id", None)
            out.joinpath(pathlib.PurePosixPath(name).name).write_text(json.dumps(schema))
PY
    rm -rf "$tmp"
    echo "$K8S_SCHEMAS_PACKAGE" >"$stamp"
}

install_keda_models() {
    local stamp="$NPM_DIR/.packages"
    local wanted="$KEDA_MODELS_PACKAGE $YAML_PACKAGE"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$wanted" ]]; then
        return 0
    fi
    command -v npm >/dev/null || die "npm is needed to install $KEDA_MODELS_PACKAGE"
    log "npm install $wanted (KEDA ScaledObject validation)"
    mkdir -p "$NPM_DIR"
    # A package.json of its own, so npm does not climb to an unrelated one.
    [[ -f "$NPM_DIR/package.json" ]] || echo '{"private": true}' >"$NPM_DIR/package.json"
    npm install --prefix "$NPM_DIR" --no-audit --no-fund --silent "$KEDA_MODELS_PACKAGE" "$YAML_PACKAGE"
    echo "$wanted" >"$stamp"
}

install_tools() {
    go_tool helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm
    go_tool kubeconform "$KUBECONFORM_VERSION" github.com/yannh/kubeconform/cmd/kubeconform
    install_schemas
    install_keda_models
}

# Validates every ScaledObject of the given rendered files; prints a kubeconform-like
# summary line.
validate_scaled_objects() {
    # Bare imports of a module read from stdin resolve from the working directory.
    (cd "$NPM_DIR" && node --input-type=module - "$@") <<'JS'
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";

const files = process.argv.slice(2);

let valid = 0;
let invalid = 0;
for (const file of files) {
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    const resource = doc.toJS();
    if (!resource || resource.kind !== "ScaledObject") continue;
    try {
      new ScaledObject(resource).validate();
      valid += 1;
    } catch (error) {
      invalid += 1;
      console.log(`${file} - ScaledObject ${resource.metadata?.name} is invalid: ${error.message}`);
    }
  }
}
console.log(`ScaledObject summary: ${valid + invalid} found - Valid: ${valid}, Invalid: ${invalid}`);
process.exit(invalid === 0 ? 0 : 1);
JS
}

main() {
    install_tools
    if [[ "${1:-}" == "tools" ]]; then
        return 0
    fi
    local helm="$BIN/helm" kubeconform="$BIN/kubeconform"
    mkdir -p "$OUT"
    rm -f "$OUT"/*.yaml

    # A go-installed helm assumes Kubernetes 1.20 unless told: the chart needs >= 1.29.
    local newest="${KUBE_VERSIONS[-1]}"
    local values name rendered=()
    for values in "$CHART"/ci/*-values.yaml; do
        name="$(basename "$values" -values.yaml)"
        log "helm lint --strict ($name)"
        "$helm" lint --strict "$CHART" --values "$values" --kube-version "$newest"
        log "helm template ($name)"
        "$helm" template "$RELEASE" "$CHART" --namespace prequal --values "$values" \
            --kube-version "$newest" >"$OUT/$name.yaml"
        rendered+=("$OUT/$name.yaml")
    done

    local version
    for version in "${KUBE_VERSIONS[@]}"; do
        log "kubeconform -strict against Kubernetes $version"
        # ScaledObject (a CRD) is checked below by KEDA's models instead.
        "$kubeconform" -strict -summary -kubernetes-version "$version" \
            -schema-location "$SCHEMA_DIR/{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
            -skip ScaledObject "${rendered[@]}"
    done

    log "KEDA ScaledObjects"
    validate_scaled_objects "${rendered[@]}"
    log "chart valid: ${#rendered[@]} renders in $OUT"
}

main "$@"

#!/usr/bin/env bash
# Lint both APIs' OpenAPI documents as an integrator would: Redocly (recommended rules)
# and Spectral (spectral:oas). Errors fail; warnings are printed. The linters are pinned
# and installed with npm into .infra/openapi-lint on first use.
set -Eeuo pipefail
cd "$(dirname "$0")/.."

REDOCLY_VERSION=2.77.0
SPECTRAL_VERSION=6.16.3
DIR=.infra/openapi-lint
STAMP="$DIR/.versions"
if [[ $(cat "$STAMP" 2>/dev/null) != "$REDOCLY_VERSION $SPECTRAL_VERSION" ]]; then
  echo "installing @redocly/cli $REDOCLY_VERSION and @stoplight/spectral-cli $SPECTRAL_VERSION with npm..."
  mkdir -p "$DIR"
  npm install --prefix "$DIR" --silent --no-audit --no-fund \
    "@redocly/cli@$REDOCLY_VERSION" "@stoplight/spectral-cli@$SPECTRAL_VERSION"
  echo "$REDOCLY_VERSION $SPECTRAL_VERSION" >"$STAMP"
fi

poetry run python - "$DIR" <<'PY'
import json
import sys
from pathlib import Path

from command_api.app import create_app as command_app
from query_api.app import create_app as query_app
from runtime.settings import Settings

out = Path(sys.argv[1])
for name, create in (("command", command_app), ("query", query_app)):
    (out / f"{name}.json").write_text(json.dumps(create(Settings()).openapi(), indent=1))
PY
printf 'extends: ["spectral:oas"]\n' >"$DIR/.spectral.yaml"

# Redocly nags about Node.js versions on stderr; only its findings matter here.
"$DIR/node_modules/.bin/redocly" lint "$DIR/command.json" "$DIR/query.json" --format=stylish 2>/dev/null
"$DIR/node_modules/.bin/spectral" lint "$DIR/command.json" "$DIR/query.json" \
  --ruleset "$DIR/.spectral.yaml" --fail-severity error

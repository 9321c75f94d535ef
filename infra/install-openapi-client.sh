#!/usr/bin/env bash
# Install openapi-python-client, the client generator an integrator would use, pinned, in
# a virtual environment of its own (.infra/openapi-client): a code generator is a tool,
# not a dependency of the project. tests/contract/test_generated_client.py runs it.
set -Eeuo pipefail
cd "$(dirname "$0")/.."

VERSION=0.29.1
VENV=.infra/openapi-client
if [[ $("$VENV/bin/openapi-python-client" --version 2>/dev/null) == *" $VERSION" ]]; then
  echo "present: openapi-python-client $VERSION"
  exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check "openapi-python-client==$VERSION"
echo "installed: openapi-python-client $VERSION in $VENV"

#!/usr/bin/env bash
# Poetry in a virtual environment of its own, as Poetry's documentation describes (the
# other way it documents is pipx): prints the path of the poetry executable.
#
# A stock Debian python3 is "externally managed" (PEP 668) and refuses `pip install`
# into itself; a virtual environment is always allowed. PREQUAL_BOOTSTRAP_PYTHON picks
# the interpreter (default python3), PREQUAL_POETRY_HOME the environment
# (default .infra/poetry). As root, Debian's python3-venv is installed when missing.
set -Eeuo pipefail
cd "$(dirname "$0")/.."

VERSION=2.2.1
PYTHON=${PREQUAL_BOOTSTRAP_PYTHON:-python3}
HOME_DIR=${PREQUAL_POETRY_HOME:-.infra/poetry}
POETRY=$HOME_DIR/bin/poetry

if [[ -x $POETRY ]] && [[ $("$POETRY" --version 2>/dev/null) == *"$VERSION"* ]]; then
  realpath "$POETRY"
  exit 0
fi
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing: the venv module of $PYTHON; run: sudo apt-get install -y python3-venv" >&2
    exit 1
  fi
  apt-get update -qq >&2
  apt-get install -y -qq python3-venv >/dev/null
fi
echo "installing Poetry $VERSION into $HOME_DIR (a virtual environment of its own)..." >&2
rm -rf "$HOME_DIR"
"$PYTHON" -m venv "$HOME_DIR"
"$HOME_DIR/bin/python" -m pip install --quiet --disable-pip-version-check "poetry==$VERSION" >&2
realpath "$POETRY"

#!/usr/bin/env bash
# Build the Toxiproxy server (the fault injector of tests/fault/test_network_faults.py)
# into .infra/bin/toxiproxy-server, pinned, unless that version is already there.
# Needs Go; as root it installs Debian's golang when go is missing.
set -Eeuo pipefail
cd "$(dirname "$0")/.."

TOXIPROXY_VERSION=v2.5.0
TOXIPROXY_SERVER=.infra/bin/toxiproxy-server
# go install leaves no version in the binary (-version says "git"): a stamp file records it.
if [[ -x $TOXIPROXY_SERVER && $(cat "$TOXIPROXY_SERVER.version" 2>/dev/null) == "$TOXIPROXY_VERSION" ]]; then
  echo "present: toxiproxy-server $TOXIPROXY_VERSION"
  exit 0
fi
if ! command -v go >/dev/null; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing: go; run: sudo apt-get update && sudo apt-get install -y golang" >&2
    exit 1
  fi
  apt-get update -qq
  apt-get install -y -qq golang >/dev/null
fi
# go install names the binary after its package directory (cmd/server): build into a
# scratch GOBIN, then give it a name that says what it is.
gobin=$(mktemp -d)
trap 'rm -rf "$gobin"' EXIT
echo "building toxiproxy-server $TOXIPROXY_VERSION with go install (first time only)..."
GOBIN=$gobin go install "github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION"
mkdir -p "$(dirname "$TOXIPROXY_SERVER")"
mv -f "$gobin/server" "$TOXIPROXY_SERVER"
echo "$TOXIPROXY_VERSION" >"$TOXIPROXY_SERVER.version"
echo "installed: toxiproxy-server $TOXIPROXY_VERSION"

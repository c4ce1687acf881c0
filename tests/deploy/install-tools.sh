#!/usr/bin/env bash
# The tools tests/deploy checks the deployment files with, into .tandem/tools; quick when they
# are there already (`make setup` runs this):
# - kustomize, built from the Go module proxy (Go 1.26+);
# - checkov, from PyPI in an environment of its own: its pins clash with the workspace's;
# - the CustomResourceDefinitions the custom resources are validated against: KEDA's and the
#   Prometheus Operator's from their Go modules, Strimzi's from its api test jar on Maven
#   Central (the only published artifact that carries them), fetched with Maven.
set -euo pipefail
cd "$(dirname "$0")/../.."

KUSTOMIZE_VERSION=v5.8.2
CHECKOV_VERSION=3.3.30
KEDA_VERSION=v2.21.0
PROMETHEUS_OPERATOR_VERSION=v0.85.0
STRIMZI_VERSION=0.49.0

tools=$PWD/.tandem/tools
mkdir -p "$tools/bin"
uv=$(command -v uv || echo "python3 -m uv")

# Go's own installer puts it here, not always on PATH.
[ -x /usr/local/go/bin/go ] && PATH=$PATH:/usr/local/go/bin

need_go() {
  if ! command -v go >/dev/null 2>&1; then
    echo "Go 1.26 or newer is needed to fetch $1 (https://go.dev/doc/install)" >&2
    exit 1
  fi
}

if [ "$("$tools/bin/kustomize" version 2>/dev/null)" != "$KUSTOMIZE_VERSION" ]; then
  need_go kustomize
  echo "building kustomize $KUSTOMIZE_VERSION"
  GOBIN="$tools/bin" go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
fi

# Checked by its metadata: starting checkov takes seconds.
if ! compgen -G "$tools/uv/checkov/lib/python*/site-packages/checkov-$CHECKOV_VERSION.dist-info" >/dev/null; then
  echo "installing checkov $CHECKOV_VERSION"
  UV_TOOL_DIR="$tools/uv" UV_TOOL_BIN_DIR="$tools/bin" \
    $uv tool install --quiet --force --python ">=3.10,<3.14" "checkov==$CHECKOV_VERSION"
fi

# The kinds fetched are in the stamp too: a machine that fetched fewer fetches again.
kinds="ScaledObject TriggerAuthentication PodMonitor KafkaTopic KafkaUser"
stamp="keda $KEDA_VERSION prometheus-operator $PROMETHEUS_OPERATOR_VERSION strimzi $STRIMZI_VERSION: $kinds"
if [ "$(cat "$tools/crds/VERSIONS" 2>/dev/null)" != "$stamp" ]; then
  need_go "the KEDA and Prometheus Operator CRDs"
  echo "fetching the CRDs: $stamp"
  rm -rf "$tools/crds.new" && mkdir -p "$tools/crds.new"
  module_dir() { go mod download -json "$1" | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])'; }
  keda=$(module_dir "github.com/kedacore/keda/v2@$KEDA_VERSION")
  install -m 644 "$keda/config/crd/bases/keda.sh_scaledobjects.yaml" \
    "$keda/config/crd/bases/keda.sh_triggerauthentications.yaml" "$tools/crds.new/"
  # The Kafka scaler's metadata keys are declared in its Go struct tags, not in the CRD.
  install -m 644 "$keda/pkg/scalers/kafka_scaler.go" "$tools/crds.new/keda_kafka_scaler.go"
  operator=$(module_dir "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")
  install -m 644 "$operator/example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml" "$tools/crds.new/"
  if ! out=$(mvn -q -B org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
    "-Dartifact=io.strimzi:api:$STRIMZI_VERSION:jar:tests" "-DoutputDirectory=$tools/crds.new" 2>&1); then
    echo "$out" >&2
    exit 1
  fi
  python3 - "$tools/crds.new" "$STRIMZI_VERSION" <<'EOF'
import sys, zipfile
from pathlib import Path
out, version = Path(sys.argv[1]), sys.argv[2]
jar = out / f"api-{version}-tests.jar"
with zipfile.ZipFile(jar) as z:
    for number, kind in (("043", "kafkatopic"), ("044", "kafkauser")):
        crd = z.read(f"crds/v1/{number}-Crd-{kind}.yaml")
        (out / f"kafka.strimzi.io_{kind}s.yaml").write_bytes(crd)
jar.unlink()
EOF
  echo "$stamp" > "$tools/crds.new/VERSIONS"
  rm -rf "$tools/crds" && mv "$tools/crds.new" "$tools/crds"
fi

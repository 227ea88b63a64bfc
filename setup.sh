#!/usr/bin/env bash
# Sets up everything the project needs; quick and harmless to run again.
#  - Fashion-MNIST (the default profile's data) from Debian's dataset-fashion-mnist package, when
#    this is Debian and we are root; otherwise it is downloaded through torchvision on first use.
#  - .venv with Python 3.11 (any 3.11.x: Debian 12's 3.11.2 included) and every dependency pinned
#    (pyproject.toml + constraints.txt). Activate it to run the stages: `source .venv/bin/activate`.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "setup: installing Debian's dataset-fashion-mnist"
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
    || echo "setup: dataset-fashion-mnist not installed; it will be downloaded when first used"
fi

fail() { echo "setup: error: $*" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  python=$(command -v python3.11 || command -v python3 || true)
  [ -n "$python" ] && "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || fail "Python 3.11 is needed, found ${python:+$("$python" --version 2>&1) at }${python:-none};" \
      "on Debian 12: apt-get install python3.11 python3.11-venv; elsewhere: pyenv install 3.11"
  "$python" -c 'import ensurepip, venv' 2>/dev/null \
    || fail "$python cannot make a virtual environment; on Debian: apt-get install python3.11-venv"
  "$python" -m venv .venv
fi

# Reinstall only when the declared dependencies change. pip's output goes to a log: on a machine
# with a partial package mirror it is pages of notices; on failure its errors are shown.
stamp=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.installed 2>/dev/null)" != "$stamp" ]; then
  echo "setup: installing pinned dependencies into .venv (first time: a few minutes; log: .venv/pip.log)"
  if ! .venv/bin/python -m pip install --disable-pip-version-check -c constraints.txt -e '.[dev]' \
      > .venv/pip.log 2>&1; then
    grep -E '^ERROR' .venv/pip.log | head -5 >&2
    fail "pip could not install the pinned dependencies (full log: .venv/pip.log)"
  fi
  echo "$stamp" > .venv/.installed
fi
echo "setup: done (.venv, $(.venv/bin/python --version))"

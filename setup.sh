#!/usr/bin/env bash
# Sets up everything the project needs; quick and harmless to run again.
#  - Fashion-MNIST (the default profile's data) from Debian's dataset-fashion-mnist package, when
#    this is Debian and we are root; otherwise it is downloaded through torchvision on first use.
#  - .venv with Python 3.11 and every dependency pinned (pyproject.toml + constraints.txt).
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "setup: installing Debian's dataset-fashion-mnist"
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
    || echo "setup: dataset-fashion-mnist not installed; it will be downloaded when first used"
fi

python=$(command -v python3.11 || command -v python3)
if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "setup: error: Python 3.11 is required (found $("$python" --version 2>&1))" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv

# Reinstall only when the declared dependencies change.
stamp=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.installed 2>/dev/null)" != "$stamp" ]; then
  echo "setup: installing pinned dependencies into .venv (first time: a few minutes)"
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
  echo "$stamp" > .venv/.installed
fi

#!/usr/bin/env bash
# Installs what the test suite needs beyond the Python package itself:
#  - Debian's chromium + chromium-driver for the real-browser tests of the labeling app.
# On CI (CI=true) a failed install is an error, so the browser tests never skip silently there.
set -euo pipefail
python_bin=${1:-.venv/bin/python}

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium + chromium-driver (Debian packages) for the browser tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) || {
      echo "could not install chromium; browser tests will be skipped" >&2
      [ "${CI:-}" = "true" ] && exit 1
    }
  else
    echo "chromium/chromedriver not found and cannot apt-get install them; browser tests will be skipped" >&2
  fi
fi

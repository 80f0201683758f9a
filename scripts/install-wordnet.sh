#!/usr/bin/env bash
# Make WordNet 3.0 available to dsspn. Uses NLTK's own data when present (nltk.download), else
# installs Debian's wordnet-base + wordnet-sense-index, then lets dsspn build its offline copy.
set -euo pipefail
PY=${1:-python3}

if "$PY" -c "from dsspn_cli.hierarchy.wordnet import wordnet; wordnet()" >/dev/null 2>&1; then
    "$PY" -m dsspn_cli hierarchy wordnet
    exit 0
fi
if [ ! -f /usr/share/wordnet/data.noun ] && command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
            echo "install-wordnet: not root; run: sudo apt-get install wordnet-base wordnet-sense-index" >&2
        fi
    fi
    packages="wordnet-base wordnet-sense-index"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -qq --no-install-recommends $packages >/dev/null 2>&1 \
        || { $SUDO apt-get update -qq >/dev/null 2>&1 && \
             $SUDO apt-get install -y -qq --no-install-recommends $packages >/dev/null; } \
        || echo "install-wordnet: apt-get could not install $packages" >&2
fi
# Builds ~/.cache/dsspn/nltk_data once from /usr/share/wordnet, or says how to get WordNet.
"$PY" -m dsspn_cli hierarchy wordnet

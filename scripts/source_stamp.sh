#!/usr/bin/env bash
# Prints the SHA-256 of everything the extension is built from (csrc/, CMakeLists.txt, setup.py),
# in a fixed order: a build carried to a GPU machine (.prebuilt/) is used only where its stamp
# equals the tree's.
set -euo pipefail
cd "$(dirname "$0")/.."
{ find csrc -type f | LC_ALL=C sort; echo CMakeLists.txt; echo setup.py; } |
  while read -r f; do echo "$f"; cat "$f"; done | sha256sum | cut -d' ' -f1

#!/usr/bin/env bash
# Build the web console into web/dist (npm ci + esbuild) when it is missing
# or older than its sources. --force rebuilds. Needs Node.js 18+ and npm;
# the npm registry only for `npm ci` (the built files need no network).
set -euo pipefail
cd "$(dirname "$0")/../web"
force=0
[ "${1:-}" = "--force" ] && force=1
stale=$force
if [ ! -f dist/index.html ]; then
  stale=1
elif [ -n "$(find src build.mjs package.json package-lock.json -newer dist/index.html -print -quit)" ]; then
  stale=1
fi
[ "$stale" = 1 ] || exit 0
if ! command -v npm >/dev/null; then
  echo "build-web: npm is missing (apt-get install nodejs npm); the web console is not built" >&2
  exit 1
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build

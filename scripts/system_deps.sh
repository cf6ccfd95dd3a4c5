#!/usr/bin/env bash
# Installs the Debian packages the test suite uses beyond Python:
#   chromium    headless browser checks of `tune report` HTML and `tune dashboard`
#   postgresql  a real server database for the many-workers test
# Idempotent: does nothing when the programs are already there. Never fails the build:
# the tests that need a missing package skip and say so loudly.
set -uo pipefail

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    echo "WARNING: cannot install ${need[*]} (not root, no sudo): their tests will be skipped" >&2
    exit 0
fi

echo "installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq >/dev/null 2>&1
if ! "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1; then
    echo "WARNING: apt-get install ${need[*]} failed: their tests will be skipped" >&2
fi
# Debian starts the packaged cluster on install; the tests run their own private one.
exit 0

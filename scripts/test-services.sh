#!/usr/bin/env bash
# Installs the services the tests start themselves: redis-server, for the shared cache
# tier's tests and benchmark (each starts its own on a free loopback port). Debian's package
# through apt-get, as root or with sudo; nothing to do when it is already on the PATH.
# MM_TEST_SERVICES=0 skips this (a missing redis-server then fails those tests, never skips
# them).
#
#   scripts/test-services.sh
set -euo pipefail

if [ "${MM_TEST_SERVICES:-1}" = 0 ]; then
    exit 0
fi
if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "install redis-server (apt-get)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
        echo "install redis-server (sudo apt-get)"
        sudo apt-get update -qq
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    else
        echo "error: redis-server is missing and cannot be installed here; install Redis (the" \
             "tests start redis-server themselves) or set MM_TEST_SERVICES=0 to skip" >&2
        exit 1
    fi
fi
echo "ok      redis-server ($(redis-server --version | cut -d' ' -f3))"

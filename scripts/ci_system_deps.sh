#!/usr/bin/env bash
# System packages the test suite uses beyond Python: headless Chromium (Debian's `chromium`), which
# tests/test_report.py uses to render the HTML report and take a screenshot. Installed with apt-get
# when it is missing and apt-get can run (root, or passwordless sudo); otherwise one clear line says
# why, and that test is skipped. Never fails the caller: exit 0 always.
set -uo pipefail

for b in chromium chromium-browser google-chrome; do
    if command -v "$b" >/dev/null 2>&1; then
        echo "ci_system_deps: $("$b" --version 2>/dev/null | head -1) already installed ($(command -v "$b"))"
        exit 0
    fi
done
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ci_system_deps: no apt-get on this machine: headless Chromium NOT installed, the report's browser test will be SKIPPED"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
        echo "ci_system_deps: not root and no passwordless sudo: headless Chromium NOT installed, the report's browser test will be SKIPPED"
        exit 0
    fi
fi
log=$(mktemp)
if $SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq >"$log" 2>&1 &&
   DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends chromium fonts-dejavu-core >>"$log" 2>&1; then
    echo "ci_system_deps: installed $(chromium --version 2>/dev/null | head -1)"
else
    echo "ci_system_deps: apt-get could not install chromium: headless Chromium NOT installed, the report's browser test will be SKIPPED. Last lines:"
    tail -5 "$log"
fi
rm -f "$log"
exit 0

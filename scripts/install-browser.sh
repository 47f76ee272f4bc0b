#!/usr/bin/env bash
# Install headless Chromium and its WebDriver for cxrlab's browser tests (tests/test_serve_browser.py).
#
# Debian/Ubuntu only: installs the `chromium` and `chromium-driver` packages with apt-get when they
# are missing. Never fails the caller: without root, apt-get or a package mirror it prints why and
# exits 0, and the browser tests then skip with a reason.
set -u

have() { command -v "$1" >/dev/null 2>&1; }

find_browser() { have chromium || have chromium-browser || have google-chrome; }
find_driver() { have chromedriver || [ -x /usr/lib/chromium/chromedriver ]; }

if find_browser && find_driver; then
    echo "install-browser: chromium and chromedriver already installed."
    exit 0
fi

if ! have apt-get; then
    echo "install-browser: apt-get not found; install Chromium and chromedriver yourself" \
        "(browser tests will be skipped)."
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif have sudo && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "install-browser: not root and no password-less sudo; run" \
        "'apt-get install chromium chromium-driver' as root (browser tests will be skipped)."
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get update -qq >/dev/null; then
    echo "install-browser: 'apt-get update' failed (no package mirror reachable?);" \
        "browser tests will be skipped."
    exit 0
fi
if ! $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; then
    echo "install-browser: 'apt-get install chromium chromium-driver' failed;" \
        "browser tests will be skipped."
    exit 0
fi

if find_browser && find_driver; then
    echo "install-browser: installed chromium and chromedriver."
else
    echo "install-browser: packages installed but chromium/chromedriver are not on PATH;" \
        "browser tests will be skipped."
fi
exit 0

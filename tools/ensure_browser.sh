# Sourced by run_tests.sh: the web page's test drives a real headless browser, Debian's chromium and
# its driver. Installs them with apt-get where they are missing and this user may (root, or sudo
# without a password); otherwise says what to install, and that test fails naming it too.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    _sudo=""
    [ "$(id -u)" = 0 ] || _sudo="sudo -n"
    if command -v apt-get >/dev/null && { [ -z "$_sudo" ] || sudo -n true 2>/dev/null; }; then
        echo "[setup] installing chromium and chromium-driver for the browser test (first run only)"
        $_sudo apt-get update -qq && \
            $_sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
            || echo "[setup] could not install chromium; the browser test will fail (apt-get install chromium chromium-driver)" >&2
    else
        echo "[setup] chromium and chromedriver are missing: the browser test needs them" \
             "(Debian/Ubuntu: apt-get install chromium chromium-driver)" >&2
    fi
fi

# Sourced by demo.sh and run_tests.sh: make sure ./.venv holds the project's requirements, then activate it.
# Re-installs only when a requirements file changed since the last install (a stamp records their hash).
# A GPU build of Paddle installed by hand (paddlepaddle-gpu) is kept: requirements.txt names the CPU
# build, which pip would otherwise install over it.
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_venv="${VISUALBERT_VENV:-$_root/.venv}"
_want="$(cat "$_root"/requirements*.txt "$_root/pyproject.toml" | md5sum | cut -d' ' -f1)"
if [ ! -x "$_venv/bin/python" ] || [ "$(cat "$_venv/.requirements.md5" 2>/dev/null)" != "$_want" ]; then
    echo "[setup] installing requirements into $_venv (first run takes a few minutes)"
    python3 -m venv "$_venv" || { echo "[setup] could not create a venv: install python3-venv" >&2; exit 1; }
    "$_venv/bin/python" -m pip install -q --upgrade pip || exit 1
    _reqs="$_root/requirements-dev.txt"
    if "$_venv/bin/python" -m pip show -q paddlepaddle-gpu >/dev/null 2>&1; then
        _keep="$(mktemp -d)"
        grep -v -E '^[[:space:]]*paddlepaddle([[:space:]<>=!~;[]|$)' "$_root/requirements.txt" > "$_keep/requirements.txt"
        sed "s|^-r requirements.txt|-r $_keep/requirements.txt|" "$_root/requirements-dev.txt" > "$_keep/requirements-dev.txt"
        _reqs="$_keep/requirements-dev.txt"
        _have="$("$_venv/bin/python" -m pip show paddlepaddle-gpu 2>/dev/null | sed -n 's/^Version: //p')"
        _pin="$(grep -E '^[[:space:]]*paddlepaddle' "$_root/requirements.txt")"
        echo "[setup] keeping the installed paddlepaddle-gpu $_have (requirements.txt asks for $_pin)"
    fi
    "$_venv/bin/python" -m pip install -q -r "$_reqs" || exit 1
    [ -n "${_keep:-}" ] && rm -rf "$_keep"
    "$_venv/bin/python" -m pip install -q --no-deps -e "$_root" || exit 1
    echo "$_want" > "$_venv/.requirements.md5"
fi
# shellcheck disable=SC1091
. "$_venv/bin/activate"
# paddle pins OpenMP to one thread on import unless told otherwise
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"
# The scripts import the package of the checkout that sourced this, also when it shares another
# checkout's venv (VISUALBERT_VENV), whose editable install points elsewhere.
export PYTHONPATH="$_root${PYTHONPATH:+:$PYTHONPATH}"

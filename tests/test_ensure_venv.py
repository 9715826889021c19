"""tools/ensure_venv.sh keeps a paddlepaddle-gpu a user installed when the requirements change
(requirements.txt names the CPU build, which pip would install over it). Fake venv, no network."""
import os
import subprocess

import pytest

from conftest import ROOT

FAKE_PYTHON = """#!/bin/sh
# a venv's python: logs pip's calls; `pip show` finds paddlepaddle-gpu when $HAS_GPU_BUILD is 1
echo "$*" >> "$LOG"
if [ "$3" = "show" ]; then
    case "$*" in *paddlepaddle-gpu*) [ "$HAS_GPU_BUILD" = 1 ] && { echo "Version: 3.3.1"; exit 0; } || exit 1 ;; esac
fi
if [ "$3" = "install" ] && [ "$5" = "-r" ]; then
    # what pip would install: the file and the one it includes
    cat "$6" >> "$LOG"; inner=$(sed -n 's/^-r //p' "$6"); case "$inner" in /*) ;; *) inner="$(dirname "$6")/$inner" ;; esac
    cat "$inner" >> "$LOG"
fi
exit 0
"""


@pytest.mark.parametrize("gpu_build", [True, False])
def test_an_installed_gpu_build_is_kept_when_requirements_change(tmp_path, gpu_build):
    venv, bin_dir, log = tmp_path / "venv", tmp_path / "bin", tmp_path / "log"
    (venv / "bin").mkdir(parents=True)
    bin_dir.mkdir()
    for path in (venv / "bin" / "python", bin_dir / "python3"):  # python3 -m venv: a no-op here
        path.write_text(FAKE_PYTHON)
        path.chmod(0o755)
    (venv / "bin" / "activate").write_text("")
    (venv / ".requirements.md5").write_text("an older stamp\n")
    env = dict(os.environ, VISUALBERT_VENV=str(venv), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               LOG=str(log), HAS_GPU_BUILD="1" if gpu_build else "0")
    proc = subprocess.run(["bash", "-c", ". tools/ensure_venv.sh"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    installed = [l.strip() for l in log.read_text().splitlines()]
    assert "paddlenlp==2.8.1" in installed and "pytest" in installed
    if gpu_build:
        assert not [l for l in installed if l.startswith("paddlepaddle")]
        assert "[setup] keeping the installed paddlepaddle-gpu 3.3.1 (requirements.txt asks for paddlepaddle>=3.3,<3.4)" \
            in proc.stdout
    else:
        assert "paddlepaddle>=3.3,<3.4" in installed and "keeping" not in proc.stdout

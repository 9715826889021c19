"""The docs stay true: docs/cli.md is every command's current --help, every flag README mentions
exists, and docs/ARCHITECTURE.md names every module."""
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

# flags of other programs that README shows (Paddle's launcher, pip, docker run)
OTHER_PROGRAMS = {"--gpus", "--log_dir", "--nproc_per_node", "--master", "--nnodes", "--rank", "--no-deps", "--help",
                  "--shm-size", "--ipc"}


@pytest.mark.slow
def test_command_reference_matches_help():
    proc = subprocess.run([sys.executable, "tools/cli_docs.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_every_flag_in_readme_exists():
    with open(os.path.join(ROOT, "README.md")) as f:
        prose = f.read()
    with open(os.path.join(ROOT, "docs", "cli.md")) as f:
        reference = f.read()
    known = set(re.findall(r"--[a-z][a-z0-9_-]*", reference)) | OTHER_PROGRAMS
    mentioned = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", prose))
    assert mentioned - known == set()
    # and every script documented there takes the original scripts' flags
    for flag in ("--input_dir", "--output_dir", "--model_type", "--model_name_or_path", "--learning_rate",
                 "--num_train_epochs", "--train_batch_size", "--batch_size", "--task_name", "--save_steps",
                 "--gradient_accumulation_steps", "--image_feature_type", "--dataset"):
        assert flag in known, flag


def test_architecture_names_every_module():
    """docs/ARCHITECTURE.md is the map of the library: a module missing there is a room nobody finds."""
    with open(os.path.join(ROOT, "docs", "ARCHITECTURE.md")) as f:
        page = f.read()
    package = os.path.join(ROOT, "visualbert")
    missing = []
    for entry in sorted(os.listdir(package)):
        path = os.path.join(package, entry)
        if entry.endswith(".py") and entry != "__init__.py":
            name = entry[:-3]
        elif os.path.isfile(os.path.join(path, "__init__.py")):
            name = entry + "/"
        else:
            continue
        if f"`{name}`" not in page:
            missing.append(name)
    assert missing == []

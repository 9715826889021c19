"""SLOW (about 40 s on 2 CPUs): `python -m visualbert.demo --own_images DIR`, the "Your own data"
path of README end to end - PNG images drawn with PIL, official-format questions, then extract
(--backbone patches_hog) -> VQA2/run_vqa2.py -> VQA2/run_predict.py -> visualbert.evaluate."""
import json
import os
import re

import pytest

from conftest import run_script

pytestmark = pytest.mark.slow  # the whole own-images demo, minutes


def test_own_images_demo_runs_the_four_commands_and_learns_the_shapes(tmp_path):
    out = tmp_path / "own"
    proc = run_script(["-m", "visualbert.demo", "--own_images", str(out)])
    commands = [line for line in proc.stdout.splitlines() if line.startswith("$ python ")]
    programs = [c.split()[3] if c.split()[2] == "-m" else c.split()[2] for c in commands]
    assert programs == ["visualbert.extract", "VQA2/run_vqa2.py", "VQA2/run_predict.py", "visualbert.evaluate"]
    assert "--backbone patches_hog" in commands[0] and "--answer_vocab build" in commands[1]
    questions = json.load(open(out / "val_questions.json"))["questions"]
    answers = json.load(open(out / "result.json"))
    assert sorted(a["question_id"] for a in answers) == sorted(q["question_id"] for q in questions)
    assert len(os.listdir(out / "images")) >= 300
    accuracy = float(re.search(r"own images: VQA accuracy ([0-9.]+)", proc.stdout).group(1))
    assert accuracy >= 0.9, proc.stdout[-3000:]

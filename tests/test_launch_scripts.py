"""The six original scripts on machines with any number of GPUs (simulated: the count Paddle reports
and CUDA_VISIBLE_DEVICES), always with the original global batch (tools/gpu_plan.py, tools/launch.sh)."""
import os
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import gpu_plan  # noqa: E402

SCRIPTS = {  # script: (original GPU ids, per-GPU batch, accumulation)
    "vqa-coco-pretrain.sh": ("1", 16, 1), "vqa-pretrain.sh": ("3", 16, 1), "nlvr2-coco-pretrain.sh": ("2", 16, 1),
    "nlvr2-pretrain.sh": ("4", 8, 1), "vqa-finetune.sh": ("0", 64, 1), "nlvr2-finetune.sh": ("1,2", 16, 4),
}


@pytest.mark.parametrize("count", [0, 1, 2, 3, 4, 8])
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_script_plans_a_launch_with_the_original_global_batch(script, count):
    ids, batch, accumulation = SCRIPTS[script]
    visible = [str(i) for i in range(count)]
    gpus, size, steps, note = gpu_plan.plan(ids, batch, accumulation, visible)
    processes = len(gpus) if gpus else 1
    assert size * steps * processes == batch * accumulation * len(ids.split(","))
    assert size <= batch
    if gpus is None:
        assert count == 0 and note.startswith(f"note: no CUDA GPU here; dropping --gpus {ids}")
    elif all(i in visible for i in ids.split(",")):
        assert gpus == ids.split(",") and note is None  # the original's choice, unchanged
    else:
        assert gpus == visible[:len(ids.split(","))] and "is not visible here" in note and "\n" not in note


def test_gpu_ids_are_the_labels_in_cuda_visible_devices(monkeypatch):
    import paddle

    monkeypatch.setattr(paddle, "is_compiled_with_cuda", lambda: True)
    monkeypatch.setattr(paddle.device.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")  # a scheduler gave this job GPUs 5 and 7
    assert gpu_plan.visible_gpus() == ["5", "7"]
    assert gpu_plan.plan("1,2", 16, 4, gpu_plan.visible_gpus())[:3] == (["5", "7"], 16, 4)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert gpu_plan.visible_gpus() == ["0", "1"]
    monkeypatch.setattr(paddle.device.cuda, "device_count", lambda: 0)
    assert gpu_plan.visible_gpus() == []


def test_gpus_from_the_environment_and_what_cannot_keep_the_global_batch():
    visible = [str(i) for i in range(8)]
    assert gpu_plan.plan("1,2", 16, 4, visible, requested="0,1,2,3")[:3] == (["0", "1", "2", "3"], 16, 2)
    assert gpu_plan.plan("0", 64, 1, visible, requested="0,1,2,3,4,5,6,7")[:3] == (visible, 8, 1)
    assert gpu_plan.plan("1,2", 16, 4, ["0"])[:3] == (["0"], 16, 8)  # one GPU: twice the accumulation
    with pytest.raises(gpu_plan.PlanError, match="3 processes cannot share the original global batch of 64"):
        gpu_plan.plan("0", 64, 1, visible, requested="0,1,2")
    assert gpu_plan.plan("1,2", 16, 4, ["0"], user_batch=True) == (
        ["0"], 16, 4, "note: GPU 1,2 of the original is not visible here (visible: 0); using 0")
    with pytest.raises(gpu_plan.PlanError, match=r"GPUS=0,9: no visible GPU 9 \(visible: 0,1,2,3,4,5,6,7\)"):
        gpu_plan.plan("0", 64, 1, visible, requested="0,9")
    with pytest.raises(gpu_plan.PlanError, match="GPUS=0, but this machine has no CUDA GPU"):
        gpu_plan.plan("0", 64, 1, [], requested="0")


FAKE_PYTHON = """#!/bin/sh
# stands in for python: the launcher prints what it was given; the planner sees $FAKE_GPUS GPUs
if [ "$1 $2" = "-m paddle.distributed.launch" ]; then
    shift 2; echo "LAUNCHED $*"; echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset}"; exit 0
fi
exec REAL -c "import runpy, sys, paddle
paddle.is_compiled_with_cuda = lambda: True
paddle.device.cuda.device_count = lambda: int('$FAKE_GPUS')
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')" "$@"
"""


def run_script(tmp_path, script, gpus, env=None, *flags):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "python"
    fake.write_text(FAKE_PYTHON.replace("REAL", shlex.quote(sys.executable)))
    fake.chmod(0o755)
    full_env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FAKE_GPUS=str(gpus))
    full_env.pop("GPUS", None)
    full_env.update(env or {})
    return subprocess.run(["sh", script, *flags], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=120)


def test_nlvr2_finetune_on_one_gpu_keeps_cuda_visible_devices_and_the_global_batch(tmp_path):
    proc = run_script(tmp_path, "nlvr2-finetune.sh", 1, {"CUDA_VISIBLE_DEVICES": "3"}, "--learning_rate", "1e-5")
    assert proc.returncode == 0, proc.stderr
    launched, visible = proc.stdout.splitlines()
    assert launched.startswith("LAUNCHED --gpus 3 --log_dir ./logs/nlvr2 NLVR2/run_nlvr2.py")
    assert "--batch_size 16 --gradient_accumulation_steps 8" in launched and launched.endswith("--learning_rate 1e-5")
    assert visible == "CUDA_VISIBLE_DEVICES=3"  # never unset: under a scheduler it names this job's GPUs
    assert proc.stderr.strip() == ("note: GPU 1,2 of the original is not visible here (visible: 3); using 3; "
                                   "batch 16 x accumulation 8 per process keeps the original global batch of 128")


def test_gpus_from_the_environment_and_a_refused_count(tmp_path):
    proc = run_script(tmp_path, "vqa-finetune.sh", 4, {"GPUS": "0,1"})
    assert proc.returncode == 0 and proc.stderr.strip() == (
        "note: batch 32 x accumulation 1 per process keeps the original global batch of 64")
    assert "--gpus 0,1 " in proc.stdout and "--batch_size 32 --gradient_accumulation_steps 1" in proc.stdout
    proc = run_script(tmp_path, "vqa-finetune.sh", 4, {"GPUS": "0,1,2"})
    assert proc.returncode == 1 and "LAUNCHED" not in proc.stdout
    assert proc.stderr.strip().startswith("error: 3 processes cannot share the original global batch of 64")
    # a batch of the user's own counts instead: nothing to split, nothing to say
    proc = run_script(tmp_path, "vqa-finetune.sh", 4, {"GPUS": "0,1,2"}, "--batch_size=20")
    assert proc.returncode == 0 and proc.stderr == ""
    assert "--gpus 0,1,2 " in proc.stdout and proc.stdout.splitlines()[0].endswith("--batch_size=20")
    proc = run_script(tmp_path, "vqa-pretrain.sh", 4)  # the original's GPU 3 exists: as it was, no line
    assert proc.returncode == 0 and proc.stderr == "" and "--gpus 3 " in proc.stdout

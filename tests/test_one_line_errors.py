"""One error convention for every command: a bad input is exactly one line on stderr starting with
``error:``, no traceback, and exit status 1 (``visualbert.errors``), whether the command is a training
script or a tool."""
import pytest

from conftest import run_script

SCRIPTS = ["run_pretrain.py", "VQA2/run_vqa2.py", "VQA2/run_predict.py", "NLVR2/run_nlvr2.py", "NLVR2/run_predict.py",
           "Flickr30K/run_flickr30k.py", "Flickr30K/run_predict.py", "VCR/run_vcr.py", "VCR/run_predict.py"]

# (command, one bad input each); "{tmp}" is a fresh directory, "{file}" a regular file in it
TOOLS = [
    ["-m", "visualbert.evaluate", "vqa", "--result", "{tmp}/none.json", "--annotations", "{tmp}/none.json",
     "--questions", "{tmp}/none.json"],
    ["-m", "visualbert.evaluate", "nlvr2", "--predictions", "{file}", "--labels", "{file}"],
    ["-m", "visualbert.plot", "{tmp}/no_run"],
    ["-m", "visualbert.features", "pack", "--image_feature_type", "coco_detectron_fix_100", "--input_dir", "{tmp}/none"],
    ["-m", "visualbert.features", "inspect", "--features", "{tmp}/none"],
    ["-m", "visualbert.features", "import", "--format", "npz_dir", "--src", "{tmp}/none", "--output_dir", "{tmp}/out"],
    ["-m", "visualbert.demo", "--out_dir", "{file}/demo"],
]
# these import paddle (seconds each)
PADDLE_TOOLS = [
    ["-m", "visualbert.extract", "--image_dir", "{tmp}/none", "--output_dir", "{tmp}/out", "--device", "cpu"],
    ["-m", "visualbert.convert", "--src", "{tmp}/none", "--dst", "{tmp}/out"],
    ["-m", "visualbert.ask", "--model", "{tmp}/none", "--image", "{file}", "--question", "what?"],
    ["-m", "visualbert.serve", "--model", "{tmp}/none", "--port", "0"],
]
REQUIRED = {"run_pretrain.py": ["--dataset", "vqa2"], "VCR/run_vcr.py": ["--mode", "answer"],
            "VCR/run_predict.py": ["--answer_model", "{tmp}/none", "--rationale_model", "{tmp}/none"]}
TRAINING_INPUT = ["--input_dir", "{tmp}/none", "--output_dir", "{tmp}/out", "--device", "cpu"]
PREDICTION_INPUT = ["--input_dir", "{tmp}/none", "--model_name_or_path", "{tmp}/none", "--output", "{tmp}/out.json",
                    "--device", "cpu"]


def assert_one_error_line(args, tmp_path):
    (tmp_path / "file").write_text("not what any command expects\n")
    argv = [a.format(tmp=tmp_path, file=tmp_path / "file") for a in args]
    proc = run_script(argv, check=False, timeout=300)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("args", TOOLS, ids=lambda a: " ".join(a[:3]))
def test_a_tool_says_a_bad_input_in_one_line(args, tmp_path):
    assert_one_error_line(args, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("args", PADDLE_TOOLS, ids=lambda a: a[1])
def test_a_paddle_tool_says_a_bad_input_in_one_line(args, tmp_path):
    assert_one_error_line(args, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_a_training_script_says_a_bad_input_in_one_line(script, tmp_path):
    bad = PREDICTION_INPUT if script.endswith("run_predict.py") else TRAINING_INPUT
    if script == "VCR/run_predict.py":  # two models instead of --model_name_or_path
        bad = bad[:2] + bad[4:]
    assert_one_error_line([script] + bad + REQUIRED.get(script, []), tmp_path)

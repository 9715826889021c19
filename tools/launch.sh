# Sourced by the six original .sh scripts (POSIX sh). gpus_flag IDS prints the launcher's `--gpus IDS` when
# this machine has CUDA GPUs, and nothing otherwise: paddle's launcher crashes on `--gpus` without
# CUDA, so on such machines the run goes to the CPU instead, with one line saying so.
gpus_flag() {
    _n=$(python -c "import paddle; print(paddle.device.cuda.device_count() if paddle.is_compiled_with_cuda() else 0)" 2>/dev/null)
    if [ "${_n:-0}" -gt 0 ]; then
        echo "--gpus $1"
    else
        echo "note: no CUDA GPU here; dropping --gpus $1 and running on the CPU" >&2
    fi
}

# the launcher imports paddle, which warns that ccache is missing (nothing is compiled here); the
# training processes it starts silence this themselves (visualbert/quiet.py)
export PYTHONWARNINGS="${PYTHONWARNINGS:+$PYTHONWARNINGS,}ignore:No ccache found:UserWarning"

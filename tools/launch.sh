# Sourced by the six original .sh scripts (POSIX sh). `plan_gpus IDS BATCH ACCUMULATION` sets
# LAUNCH_GPUS (the launcher's `--gpus ...`, or nothing on a machine without CUDA), BATCH and ACCUM
# (per process) so that the run uses the original's GPU ids where this machine has them, or GPUS
# from the environment, or as many visible GPUs as the original used, always with the original's
# global batch (tools/gpu_plan.py; one line says what differs from the original). CUDA_VISIBLE_DEVICES
# is left as it is: under a scheduler it names this job's GPUs.
plan_gpus() {  # plan_gpus IDS BATCH ACCUMULATION "$@" (the script's flags: a batch given there is kept)
    # paddle's import noise is dropped; a failure of the planner itself is shown by running it again
    _plan=$(python "$(dirname "$0")/tools/gpu_plan.py" "$@" 2>/dev/null) ||
        { python "$(dirname "$0")/tools/gpu_plan.py" "$@" >/dev/null; exit 1; }
    eval "$_plan"
}

# the launcher imports paddle, which warns that ccache is missing (nothing is compiled here); the
# training processes it starts silence this themselves (visualbert/quiet.py)
export PYTHONWARNINGS="${PYTHONWARNINGS:+$PYTHONWARNINGS,}ignore:No ccache found:UserWarning"

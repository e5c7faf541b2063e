#!/usr/bin/env bash
# The GPU check: one prepared script, under 8 minutes on one CUDA GPU, no network needed.
#
#   benchmarks/gpu_check.sh            (PY=/path/to/python to choose the interpreter;
#                                       RESULTS=dir to also keep each part's output there)
#
# 1. step cost on CUDA: plain vs linearised steps, MLP and CNN on digits      (target ≤ 1.7×)
# 2. absolute step time of the CNN on synthetic CIFAR-10-shaped tensors (3×32×32, batch 128)
# 3. throughput of 4 trials sharing one GPU (--gpus-per-trial 0.25), then 8 (0.125), against
#    the same trials one at a time                                       (targets ≥ 3×, ≥ 5×)
# 4. exact vs CG vs auto on CUDA, and the cost model's calibration lines for DEVICE_RATES
# 5. the measures' cost at default settings                                    (target ≤ 10%)
#
# Fails fast (exit 2) where torch sees no CUDA device. Each part has its own time limit; a part
# that fails or times out is reported and the rest still run; the exit status is 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
RESULTS=${RESULTS:-}
[ -n "$RESULTS" ] && mkdir -p "$RESULTS"

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: torch ($PY) sees no CUDA device; nothing was run" >&2
    exit 2
fi
"$PY" -c 'import torch; print("gpu_check:", torch.__version__, torch.cuda.get_device_name(0))'
export RAY_USAGE_STATS_ENABLED=0

failed=()
part() {  # part NAME SECONDS ARGS...: run one benchmark with a time limit, keep its output
    local name=$1 limit=$2
    shift 2
    echo
    echo "==== $name (limit ${limit}s): $*"
    local start=$SECONDS
    if [ -n "$RESULTS" ]; then
        timeout --kill-after=10 "$limit" "$@" 2>&1 | grep -v FutureWarning | tee "$RESULTS/$name.txt"
    else
        timeout --kill-after=10 "$limit" "$@" 2>&1 | grep -v FutureWarning
    fi
    local rc=${PIPESTATUS[0]}
    echo "==== $name: exit $rc after $((SECONDS - start)) s"
    [ "$rc" -eq 0 ] || failed+=("$name")
}

part step_cost 90 "$PY" -m benchmarks.step_cost --device cuda --rounds 10
part cifar_cnn_step 50 "$PY" -m benchmarks.step_cost --device cuda --models cnn \
    --image-shape 3x32x32 --batch-size 128 --rounds 5
part throughput_4 80 "$PY" -m benchmarks.study_overhead --device cuda --gpus-per-trial 0.25 \
    --trials 4 --trial-seconds 6 --rounds 1
part throughput_8 110 "$PY" -m benchmarks.study_overhead --device cuda --gpus-per-trial 0.125 \
    --trials 8 --trial-seconds 6 --rounds 1
part gn_solvers 70 "$PY" -m benchmarks.gn_solvers --device cuda --mlp-batches 64,256 \
    --cnn-batches 32 --rounds 2 --trained-steps 50
part measure_cost 30 "$PY" -m benchmarks.measure_cost --device cuda --rounds 2 --total-steps 500

echo
if [ ${#failed[@]} -gt 0 ]; then
    echo "gpu_check: FAILED parts: ${failed[*]}"
    exit 1
fi
echo "gpu_check: all parts ran; read the 'ratio' lines above"

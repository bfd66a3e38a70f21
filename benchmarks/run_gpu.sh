#!/usr/bin/env bash
# Issue 10 part 6: every benchmark on a GPU, in calls of the workplace's device tool.
# The machine has its own Python (3.12) with jax + CUDA, flax, torch; nothing can be installed
# from the internet there, so gradlab runs from this tree (PYTHONPATH) and the one missing
# package (platformdirs) travels as a wheel in .whl/. Results go to $OUT (or benchmarks/results).
#   device run: carry [".whl"], command "bash benchmarks/run_gpu.sh [STAGE ...]"
# Stages (default: all, in this order): pytest arch check scale; "arch:W,W" runs only those
# workloads of bench_architectures.py, "arch-torch:W" only its torch column.
set -u
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:/tmp/site" GRADLAB_COMPILATION_CACHE=0
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
fi
stage() {  # stage NAME SECONDS CMD...: run with a time limit, log to $OUT/NAME.log
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s) $(date +%T)"
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  tail -n "${TAIL:-15}" "$OUT/$name.log"
  echo "=== $name rc=$rc in $((SECONDS - t0)) s"
}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv
  python3 -c "import sys, jax, flax, optax, chex, torch, numpy; print(sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'chex', chex.__version__, 'torch', torch.__version__, 'numpy', numpy.__version__); print(jax.devices())"
} 2>&1 | tee "$OUT/env.log"
METHODS="gradlab,loop,torch 1 thr,jax check_grads"  # torch on CUDA: threads change nothing
for what in "${@:-pytest arch check scale}"; do
  for s in $what; do
    case $s in
      pytest)  # the checker's verdicts on the GPU: trust cases, bug corpora, correctness
        TAIL=8 stage pytest_gpu "${PYTEST_LIMIT:-110}" python3 -m pytest -p no:cacheprovider \
          -q --maxfail=5 -W ignore::DeprecationWarning tests/gradcheck/test_trust.py \
          tests/gradcheck/test_bugs.py tests/gradcheck/test_correct.py ;;
      arch)
        stage arch "${ARCH_LIMIT:-170}" python3 benchmarks/bench_architectures.py --device gpu \
          --methods "$METHODS" --max-entries 300 --out "$OUT/architectures_gpu.json" ;;
      arch:*)
        w=${s#arch:}
        stage "arch_${w//,/_}" "${ARCH_LIMIT:-170}" python3 benchmarks/bench_architectures.py \
          --device gpu --workloads "$w" --methods "$METHODS" --max-entries 300 \
          --out "$OUT/architectures_gpu_${w//,/_}.json" ;;
      arch-torch:*)
        w=${s#arch-torch:}
        stage "arch_torch_$w" "${ARCH_LIMIT:-170}" python3 benchmarks/bench_architectures.py \
          --device gpu --workloads "$w" --methods "torch 1 thr" --max-entries 300 \
          --out "$OUT/architectures_gpu_torch_$w.json" ;;
      check)  # the reference MLP (the bars), 3 repetitions
        stage check "${CHECK_LIMIT:-90}" python3 benchmarks/bench_check.py --device gpu \
          --sizes 64 --reps 3 --time-cap 5 --torch-threads 1 --out "$OUT/check_gpu.json" ;;
      scale)  # a million parameters
        stage scale "${SCALE_LIMIT:-45}" python3 benchmarks/bench_check_scale.py \
          --out "$OUT/check_scale_mlp_gpu.json" ;;
    esac
  done
done
echo "=== done $(date +%T)"

#!/usr/bin/env bash
# Everything issue 4 needs a GPU for, in two device calls of < 10 minutes each.
#
#   bash benchmarks/gpu_session.sh test    # build _C + _C_cuda in place, GPU op tests, AOT table
#   bash benchmarks/gpu_session.sh bench   # op benchmarks at Pythia 14M..1B shapes (JSON + tables)
#
# The device machine has torch, triton, pybind11 and pytest-benchmark but no network, so nothing is
# pip-installed: the extensions are built in place (their .so files are git-ignored, so a warm machine
# keeps them between the two calls). Results go to $OUT (the device tool returns that folder; default
# ./gpu_out); copy the tables into benchmarks/RESULTS.md with the device named.
set -u
stage=${1:-test}
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."

case "$stage" in
  test)
    { nvidia-smi; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"; } \
      > "$OUT/machine.txt" 2>&1
    cat "$OUT/machine.txt"
    MDA_FAST_CUDA=1 MDA_FAST_CUDA_ARCHS="90" python3 setup.py -q build_ext --inplace > "$OUT/build.log" 2>&1 \
      || { tail -40 "$OUT/build.log"; exit 1; }
    python3 -c "import mda_fast.ops as o; print(o.backend_status())" | tee -a "$OUT/machine.txt"
    python3 -m pytest -q -ra tests/test_cuda_ops.py tests/test_op_*.py > "$OUT/tests.log" 2>&1
    echo "gpu op tests rc=$?"; tail -25 "$OUT/tests.log"
    env -u TRITON_INTERPRET python3 tests/triton_aot.py --arch 90 > "$OUT/aot_sm90.md" 2>&1
    ;;
  bench)
    timeout 540 python3 -m pytest -q benchmarks/bench_op_project_per_sample_grad.py \
      benchmarks/bench_op_grad_dot_queries.py benchmarks/bench_op_ekfac_lambda_accumulate.py \
      benchmarks/bench_op_kron_inverse_apply.py benchmarks/bench_op_linear_cross_entropy.py --benchmark-enable -p no:cacheprovider \
      --benchmark-json "$OUT/bench_gpu.json" > "$OUT/bench.log" 2>&1
    echo "benchmarks rc=$?"; tail -5 "$OUT/bench.log"
    python3 benchmarks/summarize.py "$OUT/bench_gpu.json" | tee "$OUT/bench_gpu.md"
    ;;
  *)
    echo "usage: $0 test|bench" >&2; exit 2 ;;
esac

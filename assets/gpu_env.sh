# Sourced by the GPU scripts (assets/pretrain_gpu.sh, bench/gpu_check.sh) on a lent machine: where
# our dependencies are missing, the wheels in .whl/ are installed to /tmp/site first.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1

#!/usr/bin/env bash
# Reproduce the committed benchmark results (see benchmarks/RESULTS.md).
#   benchmarks/run_sweeps.sh digits     # about 15 min on an idle 2-core CPU (JOBS=2 cells at once)
#   benchmarks/run_sweeps.sh fmnist     # needs: apt-get install -y dataset-fashion-mnist
# Sweeps are resumable: rerun the same command after an interruption.
# Run directories go to benchmarks/runs/ (not committed); the tables and plots are copied to
# benchmarks/results/<name>/.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 HF_HUB_OFFLINE=1

run() {
  local name=$1 config=$2
  local out=benchmarks/runs/$name
  /usr/bin/time -f "%e s wall" fedkd sweep "$config" --out "$out" --jobs "${JOBS:-2}"
  mkdir -p benchmarks/results/"$name"
  cp "$out"/results.csv "$out"/results.md "$out"/*.png benchmarks/results/"$name"/
}

case "${1:-digits}" in
  digits) run digits simulations/configs/sweep_digits.yaml ;;
  fmnist) run fmnist simulations/configs/sweep_fmnist.yaml ;;   # slow: about 1.5 h here
  fmnist-recipe) run fmnist-recipe simulations/configs/sweep_fmnist_recipe.yaml ;;  # ~15 min
  fmnist-20) run fmnist-20 simulations/configs/sweep_fmnist_20.yaml ;;  # ~8 min
  fmnist-scattering) run fmnist-scattering simulations/configs/sweep_fmnist_scattering.yaml ;;  # ~28 min
  fmnist-scattering-baselines)
    run fmnist-scattering-baselines simulations/configs/sweep_fmnist_scattering_baselines.yaml ;;  # ~20 min
  *)
    echo "usage: $0 digits|fmnist|fmnist-recipe|fmnist-20|fmnist-scattering|fmnist-scattering-baselines" >&2
    exit 2 ;;
esac

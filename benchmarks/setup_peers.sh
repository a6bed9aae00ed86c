#!/usr/bin/env bash
# Create benchmarks/.peers-venv holding the peer libraries that bench_returns.py compares against
# (PyTorch CPU, Stable-Baselines3, TorchRL, JAX + rlax, SciPy) plus pgvar itself, editable.
# Nothing here touches the project's own dependencies. Re-running it reuses the venv.
#
#   bash benchmarks/setup_peers.sh && benchmarks/.peers-venv/bin/python benchmarks/bench_returns.py
#
# A peer that fails to install is reported and skipped; the benchmark runs without it.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
venv="$here/.peers-venv"

if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv" || exit 1
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check)

# Spelled exactly so: this pin takes the CPU wheel on local disk; a looser spec pulls a multi-GB
# CUDA build. The constraints file stops any later install from moving torch.
constraints="$venv/constraints.txt"
echo "torch==2.13.0" > "$constraints"
"${pip[@]}" torch==2.13.0 || exit 1

# pgvar and its runtime deps (numpy, numba, ...), then SciPy for the Spinning Up approach.
"${pip[@]}" -c "$constraints" -e "$root" scipy || exit 1

skipped=()
"${pip[@]}" -c "$constraints" stable-baselines3 || skipped+=("stable-baselines3")

# TorchRL: take a release whose requirements accept torch 2.13; if none resolves, fall back to
# installing torchrl and tensordict without their dependency checks.
if ! "${pip[@]}" -c "$constraints" torchrl; then
    echo "setup_peers: torchrl does not resolve with torch==2.13.0; installing it with --no-deps" >&2
    "${pip[@]}" --no-deps torchrl tensordict \
        && "${pip[@]}" -c "$constraints" cloudpickle packaging orjson pyvers importlib_metadata \
        || skipped+=("torchrl")
fi

"${pip[@]}" -c "$constraints" jax jaxlib rlax || skipped+=("rlax")

echo
"$venv/bin/python" - <<'EOF'
import importlib.metadata as md
for name in ("numpy", "numba", "scipy", "torch", "stable-baselines3", "torchrl", "tensordict",
             "jax", "jaxlib", "rlax", "pgvar"):
    try:
        print(f"{name:18s} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name:18s} (not installed)")
EOF
if [ ${#skipped[@]} -gt 0 ]; then
    echo "setup_peers: could not install: ${skipped[*]} (the benchmark skips them)" >&2
fi
echo "setup_peers: done; run: $venv/bin/python $here/bench_returns.py"

#!/usr/bin/env bash
# bsuite (bsuite_<experiment>/<setting> tasks, e.g. bsuite_catch/0) from PyPI.
# It pulls pandas, plotnine and scikit-image. The mnist experiments download
# MNIST on first use, so they need internet access; the others do not.
# Run it inside the Python environment that has this project installed.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install 'bsuite>=0.3.6'
python -c "
from embodied.envs.bsuite import BSuite
obs = BSuite('catch/0').step({'action': 0, 'reset': True})
print('bsuite works: vector', obs['vector'].shape)"

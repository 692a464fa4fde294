#!/usr/bin/env bash
# DeepMind Control Suite (dmc_* tasks): MuJoCo and dm_control from PyPI, plus
# OSMesa so that MuJoCo renders without a GPU. The adapter sets MUJOCO_GL=osmesa
# unless MUJOCO_GL is set; on a GPU machine MUJOCO_GL=egl renders faster.
# Run it inside the Python environment that has this project installed.
# mujoco 4 breaks dm_control 1.0.50 (MjModel has no attribute flex_vertedge).
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v apt-get > /dev/null; then
  sudo=$([ "$(id -u)" = 0 ] || echo sudo)
  $sudo apt-get update
  $sudo apt-get install -y libosmesa6
else
  echo "No apt-get here: install OSMesa (libOSMesa.so.8) with your package manager." >&2
fi
python -m pip install 'dm_control>=1.0.50' 'mujoco>=3.17,<4'
python -c "
import numpy as np
from embodied.envs.dmc import DMC
env = DMC('walker_walk', seed=0)
obs = env.step({'action': np.zeros(6, np.float32), 'reset': True})
env.close()
print('DMC works: image', obs['image'].shape)"

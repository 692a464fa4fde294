#!/usr/bin/env bash
# Memory Maze (memmaze_9x9, _11x11, _13x13, _15x15): the memory-maze package
# from PyPI on top of dm_control (see install-dmc.sh, which this runs first for
# MuJoCo and OSMesa). memory-maze imports the legacy `gym` package, so this
# installs it too; gym prints a notice about NumPy 2 on import, which is harmless.
# Run it inside the Python environment that has this project installed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-dmc.sh
python -m pip install 'memory-maze>=1.0.3' 'gym>=0.26'
python -c "
from embodied.envs.memmaze import MemMaze
env = MemMaze('9x9', seed=0)
obs = env.step({'action': 0, 'reset': True})
env.close()
print('Memory Maze works: image', obs['image'].shape)"

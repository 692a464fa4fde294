#!/usr/bin/env bash
# Atari (atari_* tasks): the Arcade Learning Environment, which ships the game
# ROMs in its wheel, and OpenCV for resizing frames. Both come from PyPI.
# Run it inside the Python environment that has this project installed.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install 'ale-py>=0.9' 'opencv-python-headless>=4.6'
python -c "
from embodied.envs.atari import Atari
obs = Atari('pong', seed=0).step({'action': 0, 'reset': True})
print('Atari works: image', obs['image'].shape)"

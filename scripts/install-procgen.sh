#!/usr/bin/env bash
# Procgen (procgen_* tasks) has no adapter in this project, so this installs
# nothing. The last procgen release on PyPI (0.10.7) has wheels only up to
# Python 3.10, and building it from source needs Qt5 and CMake.
echo "Procgen is not supported here: PyPI has no procgen wheels for Python 3.11 or" \
  "newer; this project has no procgen adapter. Nothing was installed." >&2
exit 1

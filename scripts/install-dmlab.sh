#!/usr/bin/env bash
# DeepMind Lab (dmlab_* tasks) has no adapter in this project, so this installs
# nothing. DeepMind Lab is not published on PyPI: it builds from its source
# repository with Bazel into a Python wheel (see that repository's build docs),
# and no adapter could be written and tested without it.
echo "DeepMind Lab is not supported here: it is not on PyPI and builds from source" \
  "with Bazel; this project has no dmlab adapter. Nothing was installed." >&2
exit 1

#!/usr/bin/env bash
# Locomotion navigation (loconav_* tasks, ant mazes) has no adapter in this
# project yet, so this installs nothing. Its simulator, dm_control.locomotion,
# comes with the DMC dependencies (scripts/install-dmc.sh), but the ant-maze
# tasks of the original are not written here.
echo "loconav is not supported yet: this project has no adapter for the ant-maze" \
  "tasks (dm_control.locomotion). Nothing was installed." >&2
exit 1

"""Replay: uniform sampling of fixed-length windows, persisted in chunk files."""

from embodied.replay.memory import (
    ReplayMemoryError, available_memory, estimate_bytes, memory_report, step_bytes)
from embodied.replay.uniform import Uniform

"""DreamerV3 in JAX.

  Agent                   the embodied Agent contract: jit, devices, params (jaxagent.py)
  configure_jax(config)   process-wide JAX settings; call before anything uses JAX
  restart_with_huge_pages(config)  rerun the command once with malloc on huge pages (CPU speed)
  CheckpointMismatchError raised when a checkpoint does not fit the agent's config
"""

from .jaxagent import (
    CheckpointMismatchError, JAXAgent as Agent, configure_jax, restart_with_huge_pages)

__version__ = '0.1.0'
from .inference import Policy, load_policy

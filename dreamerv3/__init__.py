"""DreamerV3 in JAX.

  Agent                   the embodied Agent contract: jit, devices, params (jaxagent.py)
  configure_jax(config)   process-wide JAX settings; call before anything uses JAX
  CheckpointMismatchError raised when a checkpoint does not fit the agent's config
"""

from .jaxagent import CheckpointMismatchError, JAXAgent as Agent, configure_jax

__version__ = '0.1.0'
from .inference import Policy, load_policy

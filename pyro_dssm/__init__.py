"""pyro_dssm: a deep state-space model with discrete latent states, in Pyro.

Letters used in every shape: B batch, T time, K states, D observation dim,
H hidden size.
"""

__version__ = "0.1.0"

"""Scores: Hungarian-matched accuracy, NMI/ARI, exact log p(X), ELBO gap, the oracle ceiling.

Layer: imports :mod:`pyro_dssm.data` and :mod:`pyro_dssm.model`.
"""

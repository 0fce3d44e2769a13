"""Sequences in, padded tensors out: synthetic HMM data with known truth, your own files, features, streaming.

Layer: imports :mod:`pyro_dssm.config` only.
"""

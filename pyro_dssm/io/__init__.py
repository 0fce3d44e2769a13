"""What a run leaves on disk: atomic writes, checkpoints, TensorBoard tracking, figures.

Layer: imports :mod:`pyro_dssm.data` and :mod:`pyro_dssm.evaluation` (figures are drawn from scores).
"""

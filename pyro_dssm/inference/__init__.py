"""Learning: objectives, initialisation, the SVI loop and maximum likelihood, faults, data parallelism.

Initialisation has one entry point, :func:`pyro_dssm.inference.init.initialise`; every emission family's
classical init runs the one Baum-Welch loop of :mod:`pyro_dssm.inference.em` with the family's own
M-step; the guide's warm start is :mod:`pyro_dssm.inference.warm_start`.

Layer: imports every subpackage below it (config, data, model, evaluation, io); only the
command-line entry points import it.
"""

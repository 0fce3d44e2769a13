"""Learning: objectives, initialisation, the SVI loop and maximum likelihood, faults, data parallelism.

Layer: imports every subpackage below it (config, data, model, evaluation, io); only the
command-line entry points import it.
"""

"""pyro_dssm: a deep state-space model with discrete latent states, in Pyro.

Letters used in every shape: B batch, T time, K states, D observation dim,
H hidden size.

From Python (:mod:`pyro_dssm.api`)::

    import pyro_dssm
    model = pyro_dssm.fit(sequences, n_states=3, overrides=["trainer.n_epochs=5"])
    model.predict(x), model.predict_proba(x), model.score(x), model.bic(x), model.save("model.pt")
    model = pyro_dssm.load("runs/mine")
"""

__version__ = "0.1.0"
__all__ = ["fit", "load", "FittedDSSM"]


def __getattr__(name: str):
    # imported on first use: `import pyro_dssm` (and python -m pyro_dssm.gather) stays free of torch, pyro, hydra
    if name in ("fit", "load"):
        from pyro_dssm import api

        return getattr(api, name)
    if name == "FittedDSSM":
        from pyro_dssm.fitted import FittedDSSM

        return FittedDSSM
    raise AttributeError(f"module 'pyro_dssm' has no attribute {name!r}")

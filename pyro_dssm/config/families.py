"""The one registry of model families: the emission ``p(x_t | c_t, past)`` and the transition ``p(c_t | c_{t-1}, ...)``.

A family is named in the settings (``model.emission``, ``model.transition``) and built
by :func:`pyro_dssm.model.families.make_emission` / ``make_transition``; everything that
needs to know the families (the settings' checks, the model, the init, ``select_k``,
``bic`` / ``aic``, decode) asks this registry, and nothing dispatches on a family's name.

Entries are ``"module:Class"`` paths, imported when a family is first built, so this
lowest layer names the model's classes without importing them. A family of your own:

* ``register_emission("laplace", LaplaceEmission)`` from Python, then ``model.emission=laplace``;
* or, without registering (e.g. on the command line), ``model.emission=my_package.my_module:LaplaceEmission``.

Adding a family to the package is one module plus one line here.
"""

from __future__ import annotations

import importlib

EMISSIONS: dict[str, str | type] = {
    "gaussian": "pyro_dssm.model.emissions.gaussian:GaussianEmission",
    "gaussian_scale": "pyro_dssm.model.emissions.gaussian_scale:GaussianScaleEmission",
    "gaussian_full": "pyro_dssm.model.emissions.gaussian_full:GaussianFullEmission",
    "autoregressive": "pyro_dssm.model.emissions.autoregressive:AutoregressiveEmission",
    "autoregressive_full": "pyro_dssm.model.emissions.autoregressive_full:AutoregressiveFullEmission",
    "poisson": "pyro_dssm.model.emissions.poisson:PoissonEmission",
}
TRANSITIONS: dict[str, str | type] = {
    "stationary": "pyro_dssm.model.transitions.stationary:StationaryTransition",
    "recurrent": "pyro_dssm.model.transitions.recurrent:RecurrentTransition",
    "inputs": "pyro_dssm.model.transitions.inputs:InputsTransition",
}
_KINDS = {"emission": EMISSIONS, "transition": TRANSITIONS}


def register_emission(name: str, cls: type) -> None:
    """Make ``model.emission=name`` build ``cls`` (a subclass of :class:`pyro_dssm.model.emissions.base.Emission`)."""
    _register("emission", name, cls)


def register_transition(name: str, cls: type) -> None:
    """Make ``model.transition=name`` build ``cls`` (a subclass of :class:`pyro_dssm.model.transitions.base.Transition`)."""
    _register("transition", name, cls)


def _register(kind: str, name: str, cls: type) -> None:
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"a {kind} family's name must be a non-empty string without ':', got {name!r}")
    if not isinstance(cls, type):
        raise ValueError(f"register_{kind}({name!r}, ...) takes a class, got {cls!r}")
    _KINDS[kind][name] = cls


def is_family(kind: str, name) -> bool:
    """Whether ``name`` is a registered family of ``kind`` (nothing imported) or a ``module:Class`` path that imports."""
    if isinstance(name, str) and name in _KINDS[kind]:
        return True
    try:
        family_class(kind, name)
    except ValueError:
        return False
    return True


def family_class(kind: str, name) -> type:
    """The class of the ``kind`` (``emission`` or ``transition``) family ``name`` (a registered name or a
    ``module:Class`` path). ValueError naming the known families when there is none."""
    registry = _KINDS[kind]
    entry = registry.get(name) if isinstance(name, str) else None
    if entry is None and isinstance(name, str) and ":" in name:
        entry = name
    if entry is None:
        raise ValueError(f"model.{kind} must be one of {tuple(registry)} or a 'module:Class' path, got {name!r}")
    if isinstance(entry, type):
        return entry
    module, _, attr = entry.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"model.{kind}={name!r}: cannot import {entry!r} ({exc})") from None

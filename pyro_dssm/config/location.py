"""Where the Hydra configs are, however the package was installed.

The YAML files live in ``configs/`` at the top of the repository. A wheel ships
a copy inside the package as ``pyro_dssm/conf`` (``pyproject.toml`` maps the
package ``pyro_dssm.conf`` to ``configs/``); a source checkout or an editable
install (``pip install -e .``) reads ``configs/`` itself, so an edit there takes
effect at once. Entry points pass :data:`CONFIG_DIR` to Hydra as an absolute
``config_path``, which does not depend on the working directory.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]


def config_dir(package: Path = PACKAGE) -> Path:
    """The directory holding ``config.yaml``: ``package/conf`` if installed from a wheel, else ``../configs``.

    The installed copy is tried first: beside an installed package, ``../configs``
    is site-packages' own folder, where another distribution may have put one.
    """
    installed = package / "conf"
    # neither there: Hydra names the missing directory ("Primary config directory not found")
    return installed if (installed / "config.yaml").is_file() else package.parent / "configs"


CONFIG_DIR = str(config_dir())

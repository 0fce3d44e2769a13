"""Settings: the typed configuration of every Hydra group and the one style of range checks.

Lowest layer: imported by every other subpackage, imports none of them.
Importing it registers the schema with Hydra's ConfigStore (:mod:`pyro_dssm.config.schema`).
:mod:`pyro_dssm.config.families` is the one registry of the model's families, which the checks read.
"""

from pyro_dssm.config.checks import FEATURES, INITS, MISSING_POLICIES, OBJECTIVES, SOURCES
from pyro_dssm.config.schema import (DATA_CONFIGS, BaselineConfig, Config, CountsDataConfig, DataConfig,
                                     DrivenDataConfig, FileDataConfig, ModelConfig, NpyDataConfig, PeriodicDataConfig,
                                     RecurrentDataConfig, SwitchingARDataConfig, SyntheticDataConfig, TrainerConfig,
                                     data_settings, settings)

__all__ = ["FEATURES", "INITS", "MISSING_POLICIES", "OBJECTIVES", "SOURCES", "DATA_CONFIGS", "BaselineConfig", "Config",
           "CountsDataConfig", "DataConfig", "DrivenDataConfig", "FileDataConfig", "ModelConfig", "NpyDataConfig",
           "PeriodicDataConfig", "RecurrentDataConfig", "SwitchingARDataConfig", "SyntheticDataConfig", "TrainerConfig",
           "data_settings", "settings"]

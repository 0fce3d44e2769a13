"""The typed configs: Hydra composes configs/*.yaml onto the dataclasses of pyro_dssm/config/schema.py.

Oracles: the YAML files read as plain YAML (not through Hydra), the field lists of
the dataclasses, and the CLI run in a child process (exit code, stderr).
"""

import dataclasses

import pytest
import yaml
from omegaconf import OmegaConf

from pyro_dssm.config import (DATA_CONFIGS, BaselineConfig, Config, CountsDataConfig, DrivenDataConfig,
                              FileDataConfig, ModelConfig, NpyDataConfig, PeriodicDataConfig, RecurrentDataConfig, SwitchingARDataConfig,
                              SyntheticDataConfig,
                              TrainerConfig, data_settings, settings)

from .helpers import CONFIGS, compose_config

GROUP_CLASSES = {"model": ModelConfig, "trainer": TrainerConfig, "baseline": BaselineConfig}
DATA_SCHEMAS = {"file": FileDataConfig, "npy": NpyDataConfig, "synthetic": SyntheticDataConfig,
                "switching_ar": SwitchingARDataConfig, "counts": CountsDataConfig, "periodic": PeriodicDataConfig,
                "recurrent": RecurrentDataConfig, "driven": DrivenDataConfig}


def fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def read_yaml(path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def data_class_of(name: str):
    """The dataclass a data/NAME.yaml starts from, following its defaults list by hand."""
    for entry in read_yaml(CONFIGS / "data" / f"{name}.yaml").get("defaults", []):
        if isinstance(entry, str) and entry.startswith("/schema/data/"):
            return DATA_SCHEMAS[entry.removeprefix("/schema/data/").split("@")[0]]
        if isinstance(entry, str) and entry != "_self_":
            return data_class_of(entry)  # extends another data config (hard -> synthetic)
    raise AssertionError(f"data/{name}.yaml names no schema")


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_group_yaml_holds_only_its_dataclass_keys(path):
    group = path.parent.name
    if group == "hydra":
        pytest.skip("Hydra's own groups")
    if path.read_text().startswith("# @package _global_"):  # a preset (model=motion): sections of groups
        for section, values in read_yaml(path).items():
            if section != "defaults":
                cls = FileDataConfig if section == "data" else GROUP_CLASSES[section]
                assert set(values) <= set(fields(cls)), (path, section, set(values) - set(fields(cls)))
        return
    cls = data_class_of(path.stem) if group == "data" else GROUP_CLASSES[group]
    keys = [k for k in read_yaml(path) if k != "defaults"]
    assert set(keys) <= set(fields(cls)), (path, set(keys) - set(fields(cls)))
    complete = ("csv", "npy", "synthetic", "switching_ar", "counts", "periodic", "recurrent", "driven")
    if path.stem in complete or group != "data":  # complete: every key shown and explained
        assert keys == fields(cls)


def test_root_yaml_holds_only_root_keys():
    keys = set(read_yaml(CONFIGS / "config.yaml")) - {"defaults", "hydra"}
    assert keys <= set(fields(Config)) and {"seed", "overwrite"} <= keys


@pytest.mark.parametrize("source", ["synthetic", "hard", "csv", "npz", "npy"])
def test_composition_gives_the_dataclasses_with_the_yaml_values(source):
    cfg = compose_config([f"data={source}", "data.path=x"] if source not in ("synthetic", "hard") else
                         [f"data={source}"])
    assert OmegaConf.get_type(cfg) is Config
    assert OmegaConf.get_type(cfg.data) is data_class_of(source) is DATA_CONFIGS[cfg.data.name]
    for group, cls in GROUP_CLASSES.items():
        assert OmegaConf.get_type(cfg[group]) is cls
    # what train() builds: every value as the YAML files (read without Hydra) say
    data = data_settings(OmegaConf.to_container(cfg.data, resolve=True))
    expected = read_yaml(CONFIGS / "data" / f"{source}.yaml")
    if source == "hard":  # extends synthetic
        expected = {**read_yaml(CONFIGS / "data" / "synthetic.yaml"), **expected}
    expected.pop("defaults")
    expected.update({"path": "x"} if "path" in expected else {})
    assert {k: getattr(data, k) for k in expected} == expected
    trainer = settings(TrainerConfig, OmegaConf.to_container(cfg.trainer, resolve=True), "trainer")
    assert dataclasses.asdict(trainer) == {k: v for k, v in read_yaml(CONFIGS / "trainer" / "default.yaml").items()}
    model = OmegaConf.to_container(cfg.model, resolve=True)  # K, D and sigma follow the data group
    assert (model["n_states"], model["obs_dim"], model["noise_std"]) == (data.n_states, data.obs_dim, data.noise_std)
    assert (cfg.seed, cfg.overwrite) == (0, False)


def test_a_group_maps_one_to_one_onto_its_dataclass():
    values = {**OmegaConf.to_container(compose_config().trainer), "nonsense": 3}
    with pytest.raises(ValueError, match=r"trainer.nonsense is not a trainer setting \(expected one of \['n_epochs'"):
        settings(TrainerConfig, values, "trainer")
    with pytest.raises(ValueError, match=r"data.name must be one of \('synthetic', 'switching_ar', 'counts', "
                                         r"'periodic', 'recurrent', 'driven', 'csv', 'npz', 'npy'\), got 'tsv'"):
        data_settings({"name": "tsv"})


# (arguments, the stderr line) through the real CLI: all refused by the schema before anything runs
CLI_CASES = [
    (["trainer.nonsense=3"], "error: trainer.nonsense is not a trainer setting (expected one of ['n_epochs', "),
    (["+trainer.nonsense=3"], "error: trainer.nonsense is not a trainer setting (expected one of ['n_epochs', "),
    (["nonsense=3"], "error: nonsense is not a setting (expected one of ['data', 'model', 'trainer', 'baseline', "),
    (["trainer.lr=abc"], "error: trainer.lr must be a number, got 'abc'"),
    (["data.n_states=2.5"], "error: data.n_states must be an integer, got 2.5"),
    (["seed=abc"], "error: seed must be an integer, got 'abc'"),
    (["trainer.resume=[a,b]"], "error: trainer.resume must be null or a string, got ['a', 'b']"),
    (["data=nonexistent"], "error: data=nonexistent is not a data option (expected one of ['counts', 'csv', 'driven', 'hard', "
                           "'npy', 'npz', 'periodic', 'recurrent', 'switching_ar', 'synthetic'])"),
    (["data=csv", "data.window=abc"], "error: data.window must be null or an integer, got 'abc'"),
    (["-m", "seed=0,1,x"], "error: seed must be an integer, got 'x'"),  # every value of a sweep
    (["trainer.lr=["], "error: cannot read the override 'trainer.lr=['"),
]


@pytest.mark.parametrize("args, line", CLI_CASES, ids=[" ".join(c[0]) for c in CLI_CASES])
def test_cli_refuses_what_the_schema_refuses_in_one_line(cli, tmp_path, args, line):
    proc = cli.run("pyro_dssm.train", [*args, f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/sweep"])
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(line) and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stdout == "" and list(tmp_path.iterdir()) == []


def test_full_error_leaves_a_schema_error_to_hydra_with_its_traceback(cli, tmp_path):
    proc = cli.run("pyro_dssm.train", ["trainer.nonsense=3", f"hydra.run.dir={tmp_path}/run"],
                   env={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "trainer.nonsense" in proc.stderr

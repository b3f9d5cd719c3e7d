from dataclasses import dataclass, field

import pytest
import yaml

from ssl_audio.config import Config, DataConfig, from_dict, load_config, save_config


@dataclass(frozen=True, kw_only=True)
class Inner:
    layers: tuple[int, ...] = (1, 2)
    conv: tuple[tuple[int, int, int], ...] = ((512, 10, 5),)
    name: str | None = None


@dataclass(frozen=True, kw_only=True)
class Outer:
    lr: float = 1e-3
    inner: Inner = field(default_factory=Inner)


def test_yaml_and_overrides_resolve(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("run_dir: runs/x\ndata:\n  max_samples: 32000\n  collate: crop\n")
    cfg = load_config(recipe, ["data.max_batch_seconds=12", "seed=7", "data.target_lufs=-23"])
    assert cfg.run_dir == "runs/x" and cfg.seed == 7
    assert cfg.data == DataConfig(max_samples=32000, collate="crop", max_batch_seconds=12.0, target_lufs=-23.0)
    assert isinstance(cfg.data.max_batch_seconds, float)


def test_saved_config_loads_back_identically(tmp_path):
    cfg = load_config(None, ["data.num_buckets=4", "data.bucketing=false"])
    save_config(cfg, tmp_path / "run" / "config.yaml")
    assert load_config(tmp_path / "run" / "config.yaml") == cfg
    nested = from_dict({"inner": {"layers": [3, 4, 5], "conv": [[1, 2, 3], [4, 5, 6]]}}, schema=Outer)
    assert nested.inner.layers == (3, 4, 5) and nested.inner.conv == ((1, 2, 3), (4, 5, 6))
    save_config(nested, tmp_path / "outer.yaml")
    assert from_dict(yaml.safe_load((tmp_path / "outer.yaml").read_text()), schema=Outer) == nested


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.max_sample=1"], "unknown config key 'data.max_sample'"),
        (["dta.max_samples=1"], "unknown config key 'dta'"),
        (["data.max_samples=1.5"], "'data.max_samples': expected int, got float"),
        (["data.max_samples=yes"], "'data.max_samples': expected int"),
        (["data.collate=trim"], r"'data.collate': 'trim' is not one of \['pad', 'crop'\]"),
        (["data.bucketing=3"], "'data.bucketing': expected bool"),
        (["data=3"], "'data': expected a mapping"),
        (["data.max_samples"], "expected key=value"),
        (["seed.x=1"], "'seed': expected int, got dict"),
    ],
)
def test_bad_keys_and_types_name_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, overrides)


def test_nested_types_are_checked():
    with pytest.raises(ValueError, match=r"'inner.conv\[0\]': expected 3 items"):
        from_dict({"inner": {"conv": [[1, 2]]}}, schema=Outer)
    with pytest.raises(ValueError, match=r"'inner.layers\[1\]': expected int"):
        from_dict({"inner": {"layers": [1, "x"]}}, schema=Outer)
    assert from_dict({"inner": {"name": None}}, schema=Outer).inner.name is None
    with pytest.raises(ValueError, match="'inner.name'"):
        from_dict({"inner": {"name": 3}}, schema=Outer)


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ValueError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="list.yaml: expected a mapping"):
        load_config(listy)
    with pytest.raises(ValueError, match="missing.yaml: cannot read config"):
        load_config(tmp_path / "missing.yaml")


def test_configs_are_frozen():
    with pytest.raises(AttributeError):
        Config().seed = 3  # type: ignore[misc]

from dataclasses import dataclass, field

import pytest
import yaml

from ssl_audio.configs import parse_yaml, save_config
from ssl_audio.data.config import DataConfig
from ssl_audio.train.config import Config, from_dict, load_config


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


UNCLOSED_LIST = "expected ',' or ']', but got '<stream end>'; while parsing a flow sequence"  # PyYAML's words


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ("optim.lr=[1", f"column 3: {UNCLOSED_LIST} at column 1"),
        ("optim.lr='x", "column 3: found unexpected end of stream; while scanning a quoted scalar at column 1"),
        ("optim.lr=a: b: c", "column 5: mapping values are not allowed here"),
        ("train={cpu: true, cpu: false}", "column 13: duplicate key 'cpu'; key first given at column 2"),
        ("optim.lr=!!float 1", "tag '!!float': overrides take no tags"),
        ("optim.betas=[0.9, !custom 0.98]", "tag '!custom': overrides take no tags"),
    ],
)  # fmt: skip
def test_malformed_overrides_name_the_override_in_one_line(override, reason):
    with pytest.raises(ValueError) as caught:
        load_config(None, [override])
    assert str(caught.value) == f"defaults: config override {override!r}: not valid YAML ({reason})"


def test_python_tags_construct_nothing(tmp_path):
    made = tmp_path / "made"
    tag = "!!python/object/apply:os.mkdir"
    with pytest.raises(ValueError) as caught:
        load_config(None, [f"run_dir={tag} [{str(made)!r}]"])
    assert str(caught.value).endswith(f"not valid YAML (tag {tag!r}: overrides take no tags)")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"seed: 1\nrun_dir: {tag} [{str(made)!r}]\n")
    with pytest.raises(ValueError) as caught:
        load_config(recipe)
    assert str(caught.value) == (
        f"{recipe}: not valid YAML (line 2, column 10: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object/apply:os.mkdir')"
    )
    assert not made.exists()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "seed: 1\nrun_dir: a\nseed: 2\n",
            "line 3, column 1: duplicate key 'seed'; key first given at line 1, column 1",
        ),
        (
            "optim:\n  lr: 0.001\n  eps: 1.0e-6\n  lr: 0.002\n",
            "line 4, column 3: duplicate key 'optim.lr'; key first given at line 2, column 3",
        ),
        (
            "model:\n  config:\n    masking: {mask_prob: 0.5, mask_prob: 0.6}\n",
            "line 3, column 31: duplicate key 'model.config.masking.mask_prob'; key first given at line 3, column 15",
        ),
        (
            "iterations:\n  - k: 100\n  - k: 500\n    layer: 6\n    k: 50\n",
            "line 5, column 5: duplicate key 'iterations[1].k'; key first given at line 3, column 5",
        ),
    ],
)
def test_duplicate_keys_are_refused_naming_key_and_line(tmp_path, text, reason):
    recipe = tmp_path / "dup.yaml"
    recipe.write_text(text)
    with pytest.raises(ValueError) as caught:
        load_config(recipe)
    assert str(caught.value) == f"{recipe}: not valid YAML ({reason})"


def test_anchors_and_merge_keys_still_work(tmp_path):
    """A '<<' merge is meant to be overridden, and an alias repeats a section: neither is a duplicate."""
    recipe = tmp_path / "merge.yaml"
    recipe.write_text("data: &d {max_samples: 16000, num_workers: 0}\noptim: {lr: 0.002}\n")
    assert load_config(recipe).data.max_samples == 16000
    iterate = tmp_path / "iterate.yaml"
    iterate.write_text("base: &r {k: 100, max_points: 500}\niterations:\n  - *r\n  - <<: *r\n    k: 200\n")
    values = parse_yaml(iterate.read_text())
    assert values["iterations"] == [{"k": 100, "max_points": 500}, {"k": 200, "max_points": 500}]


def test_yaml_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 1\ndata: [unclosed\n")
    with pytest.raises(ValueError) as caught:
        load_config(bad)
    assert str(caught.value) == (f"{bad}: not valid YAML (line 3, column 1: {UNCLOSED_LIST} at line 2, column 7)")

"""Every recipe parses into its config, and its model section resolves against the family's presets."""

from pathlib import Path

import pytest
import yaml

from ssl_audio.cluster.iterate import IterateConfig
from ssl_audio.models.registry import family_config
from ssl_audio.train.config import Config, from_dict, load_config

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_resolves(recipe):
    raw = yaml.safe_load(recipe.read_text())
    if "iterations" in raw:
        cfg = load_config(recipe, schema=IterateConfig)
        assert len(cfg.iterations) >= 1
        pretrain = from_dict(cfg.pretrain)
        assert pretrain.model.family in ("hubert", "wavlm", "whisper")
        family_config(pretrain.model)
    else:
        cfg = load_config(recipe)
        assert isinstance(cfg, Config)
        if cfg.model.family in ("wav2vec2", "bestrq"):  # label-based families get num_classes from their label files
            family_config(cfg.model)


def test_paper_recipes_state_seconds_per_update():
    """The paper recipes fix the effective batch in seconds, as the papers state it."""
    expected = {"wav2vec2_base": 5600.0, "hubert_base_iter1": 2800.0, "hubert_base_iter2": 2800.0}
    for name, seconds in expected.items():
        assert load_config(Path(RECIPES[0]).parent / f"{name}.yaml").train.target_seconds_per_update == seconds

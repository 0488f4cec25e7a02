"""Config validation: defaults work, bad keys and values are named, secrets refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from antssl.config import Config, load_config, parse_config
from antssl.errors import ConfigError


def test_defaults_are_valid_and_local() -> None:
    cfg = parse_config({})
    assert cfg.workspace.startswith("file://")
    assert cfg.tiling.size == 64 and cfg.tiling.stride == 32
    assert cfg.mask.kind == "coastline" and cfg.mask.vector is None


def test_unknown_key_names_key_and_allowed() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"tiling": {"sise": 64}})
    msg = str(err.value)
    assert "tiling.sise" in msg and "unknown key" in msg
    assert "size" in msg and "stride" in msg  # allowed keys listed


def test_unknown_top_level_key() -> None:
    with pytest.raises(ConfigError, match=r"workspce.*allowed keys here: .*workspace"):
        parse_config({"workspce": "file:///tmp/x"})


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"tiling": {"stride": 0}}, "tiling.stride must be > 0"),
        ({"tiling": {"stride": -3}}, "tiling.stride must be > 0"),
        ({"tiling": {"size": 64, "stride": 80}}, "must be <= tiling.size"),
        ({"mask": {"kind": "polygon"}}, "mask.kind"),
        ({"mask": {"kind": "raster"}}, "needs mask.raster"),
        ({"scenes": {"bands": [0, 1]}}, "1-based"),
        ({"scenes": {"on_bad_scene": "ignore"}}, "'fail' or 'skip'"),
        ({"tiling": {"min_mask_fraction": 1.5}}, "tiling.min_mask_fraction"),
    ],
)
def test_bad_values_are_named(data: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        parse_config(data)


def test_bad_value_shows_the_value() -> None:
    with pytest.raises(ConfigError, match="'ignore'"):
        parse_config({"scenes": {"on_bad_scene": "ignore"}})


def test_secrets_refused_and_not_echoed() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"storage": {"aws_secret_access_key": "SUPERSECRET"}})
    assert "storage.aws_secret_access_key" in str(err.value)
    assert "SUPERSECRET" not in str(err.value)
    assert "AWS_SECRET_ACCESS_KEY" in str(err.value)


def test_load_yaml_and_override(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("workspace: s3://bucket/run1\ntiling:\n  size: 32\n  stride: 16\n")
    cfg = load_config(p, {"workspace": "file:///tmp/elsewhere"})
    assert cfg.workspace == "file:///tmp/elsewhere"
    assert (cfg.tiling.size, cfg.tiling.stride) == (32, 16)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tiling: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(lst)


def test_digest_tracks_sections() -> None:
    a = Config()
    b = parse_config({"tiling": {"size": 32, "stride": 16}})
    assert a.digest("scenes") == b.digest("scenes")
    assert a.digest("tiling") != b.digest("tiling")
    assert parse_config(a.model_dump(mode="json")) == a  # round trip


def test_shipped_configs_parse_and_sample_yaml_matches_the_demo() -> None:
    """configs/*.yaml load; configs/sample.yaml is the demo's config with relative paths."""
    from antssl.demo import sample_config

    root = Path(__file__).resolve().parent.parent
    shipped = sorted((root / "configs").glob("*.yaml"))
    assert {p.name for p in shipped} >= {"sample.yaml", "moa.yaml"}
    for p in shipped:
        load_config(p)
    cfg = load_config(root / "configs" / "sample.yaml")
    demo = parse_config(sample_config(Path("antssl-demo/sample"), Path("antssl-demo/workspace")))
    assert cfg.scenes.glob == "antssl-demo/sample/scene_*[0-9].tif"
    assert cfg.evaluate.scenes is not None
    assert cfg.evaluate.scenes.glob == "antssl-demo/heldout/scene_*[0-9].tif"
    for section in ("tiling", "train", "embed", "cluster"):
        assert getattr(cfg, section) == getattr(demo, section), section
    assert cfg.evaluate.probe_fit_scenes is not None
    assert cfg.evaluate.probe_fit_scenes.glob == cfg.scenes.glob  # fitted on pretraining scenes
    paths = {"scenes", "probe_fit_scenes"}  # relative here, absolute in the demo's config
    assert cfg.evaluate.model_dump(exclude=paths) == demo.evaluate.model_dump(exclude=paths)


def test_the_sample_config_and_the_demo_train_with_the_default_recipe(tmp_path: Path) -> None:
    import yaml

    from antssl.config import TrainConfig
    from antssl.demo import sample_config

    root = Path(__file__).resolve().parents[1]
    default = TrainConfig()
    recipe = ("input_norm", "pool", "texture_weight", "augment", "objective", "temperature")
    recipe += ("cross_scene_weight", "scene_negatives_weight", "shuffle_buffer")
    sample_yaml = yaml.safe_load((root / "configs/sample.yaml").read_text())["train"]
    demo = sample_config(tmp_path / "sample", tmp_path / "ws")["train"]
    for train in (sample_yaml, demo):
        parsed = TrainConfig(**train)
        assert {k: getattr(parsed, k) for k in recipe} == {k: getattr(default, k) for k in recipe}
    # the default is the recipe chosen in bench/RESULTS.md 5b
    assert (default.input_norm, default.pool, default.texture_weight) == ("destripe", "stats", 4.0)
    assert default.augment.stretch_prob > 0 and default.augment.resolution_max == 4.0


def test_the_readme_config_and_the_shipped_configs_are_valid() -> None:
    """What a user copies: the README's example config, and configs/*.yaml as shipped."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    block = readme.split("A config (all keys", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    cfg = parse_config(yaml.safe_load(block), "README.md")
    assert cfg.train.embedding == "prototypes" and cfg.train.prototypes == 32
    for path in sorted((root / "configs").glob("*.yaml")):
        parse_config(yaml.safe_load(path.read_text()), str(path))
    moa = parse_config(yaml.safe_load((root / "configs/moa.yaml").read_text()))
    assert moa.train.embedding == "features" and moa.train.descriptor == "texture"

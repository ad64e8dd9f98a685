"""params.yaml validation: every bad value names the key, the value and what is allowed."""
import dataclasses
from pathlib import Path

import pytest
import yaml

from pipeline.config import ParamsError, Params, load_params, parse_params, with_override


def test_shipped_params_are_valid():
    p = load_params("params.yaml")
    assert p.attention.position in ("pre", "post", "none")
    assert p.flat()["attention.position"] == p.attention.position
    assert p.flat()["evaluate.classifier.epochs"] == p.evaluate.classifier.epochs


def test_defaults_match_the_shipped_file():
    """The dataclass defaults and params.yaml tell the same story."""
    assert load_params("params.yaml") == Params()


BAD = [
    ("attention.position", "sideways", "one of post | pre | none"),
    ("attention.position", "pst", "did you mean 'post'"),
    ("loss.type", "wasserstein", "one of hinge | bce"),
    ("loss.type", 3, "one of hinge | bce"),
    ("train.steps", 0, ">= 1"),
    ("train.steps", -5, ">= 1"),
    ("train.steps", "many", "an integer"),
    ("train.steps", 1.5, "an integer"),
    ("train.batch_size", 1, ">= 2"),
    ("train.lr_g", 0, "> 0.0"),
    ("train.lr_d", "fast", "a number"),
    ("train.beta2_d", 1.5, "<= 0.99999"),
    ("train.ema", "yes", "true or false"),
    ("train.device", "tpu", "one of auto | cpu | cuda"),
    ("train.precision", "fp8", "one of auto | fp32 | bf16"),
    ("data.source", "kaggle", "one of embedded | torchvision | idx_dir"),
    ("data.holdout_fraction", 0.0, "> 0.0"),
    ("model.z_dim", 0, ">= 1"),
    ("model.g_attention_at", [14, 21], "drawn from [14, 28]"),
    ("model.spectral_norm_d", 2, "true or false"),
    ("model.d_extra_convs", 9, "<= 8"),
    ("seed", -1, ">= 0"),
    ("evaluate.n_samples", 5, ">= 10"),
    ("evaluate.classifier.epochs", 0, ">= 1"),
    ("evaluate.classifier_b.epochs", 0, ">= 1"),
    ("evaluate.classifier_b.arch", "resnet", "one of lenet | cnn"),
    ("evaluate.classifier_b.lr", 0, "> 0.0"),
    ("evaluate.classifier_b.seed", 0, "a seed other than evaluate.classifier.seed = 0"),
    ("sample.n", "all", "an integer"),
    ("ablation.axes", {"attention.positon": ["pre"]}, "did you mean 'attention.position'"),
    ("ablation.axes", {"loss.type": ["hinge", "l2"]}, "loss.type"),
    ("ablation.seeds", [1, 1], "distinct"),
    ("ablation.margin.fid", "ten", "a number or a mapping {share: a number, of: one of cell | gap}"),
    ("ablation.margin.fid", 0, "> 0.0"),
    ("ablation.margin.fid", [0.1], "a number or a mapping"),
    ("ablation.margin.fid", {"share": 2, "of": "cell"}, "`ablation.margin.fid.share` = 2.0 is invalid: expected a number > 0.0 and <= 1.0"),
    ("ablation.margin.classifier_score", {"share": 0.1, "of": "floor"}, "one of cell | gap"),
]


@pytest.mark.parametrize("key,value,allowed", BAD, ids=[f"{k}={v}" for k, v, _ in BAD])
def test_bad_values_name_key_value_and_allowed(key, value, allowed):
    raw = yaml.safe_load(open("params.yaml"))
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    with pytest.raises(ParamsError) as e:
        parse_params(raw)
    msg = str(e.value)
    assert key.split(".")[0] in msg
    assert allowed in msg


@pytest.mark.parametrize("key,suggestion", [
    ("train.setps", "train.steps"), ("attention.postion", "attention.position"), ("lossx", None),
])
def test_unknown_keys_suggest_the_closest(key, suggestion):
    raw = yaml.safe_load(open("params.yaml"))
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = 1
    with pytest.raises(ParamsError) as e:
        parse_params(raw)
    assert f"unknown key `{key}`" in str(e.value)
    if suggestion:
        assert f"Did you mean `{suggestion}`" in str(e.value)


def test_the_second_evaluator_is_its_own_judge():
    """evaluate.classifier_b: another network and seed by default; its seed never A's (B would start from A's
    draws), and no grid axis may turn it (every run of a grid is judged by the same two evaluators)."""
    p = Params()
    assert p.evaluate.classifier_b.arch == "lenet" and p.evaluate.classifier_b.seed != p.evaluate.classifier.seed
    assert with_override(p, {"evaluate.classifier_b.arch": "cnn"}).evaluate.classifier_b.arch == "cnn"
    with pytest.raises(ParamsError, match="evaluate.classifier_b.seed` = 3 .*evaluate.classifier.seed = 3"):
        with_override(p, {"evaluate.classifier.seed": 3, "evaluate.classifier_b.seed": 3})
    with pytest.raises(ParamsError, match="ablation.axes.evaluate.classifier_b.seed.*second evaluator"):
        with_override(p, {"ablation.axes": {"evaluate.classifier_b.seed": [2, 3]}})


def test_bool_strings_for_compile_enum():
    p = with_override(Params(), {"train.compile": True})
    assert p.train.compile == "true"


def test_params_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Params().seed = 3


# ---------------------------------------------------------------- documentation

def test_readme_parameter_table_is_generated_from_the_help_texts():
    """One source for what each key means: the help text beside it in pipeline/config.py. The table
    (docs/params.md, linked from the README) must be exactly what `python -m pipeline.params_doc --readme`
    writes, and cover every key."""
    from pathlib import Path

    from pipeline.config import Params, flatten
    from pipeline.params_doc import PARAMS_DOC, param_docs, params_table, readme_with_table

    root = Path(__file__).resolve().parent.parent
    readme = (root / PARAMS_DOC).read_text()
    assert readme_with_table(readme) == readme, "docs/params.md is stale: run python -m pipeline.params_doc --readme"
    assert str(PARAMS_DOC) in (root / "README.md").read_text()
    assert params_table() in readme
    keys = [k for k, *_ in param_docs()]
    assert set(keys) == set(flatten(Params().to_dict())) and len(keys) == len(set(keys))
    assert all(help.strip() for *_, help in param_docs())


def test_readme_stays_a_reference():
    """Measurements and recipe history live in docs/, not in the README (at most 8 KB)."""
    from pathlib import Path

    size = len((Path(__file__).resolve().parent.parent / "README.md").read_bytes())
    assert size <= 8 * 1024, f"README.md is {size} bytes: move detail to docs/"


def test_the_tutorial_recipe_of_the_docs_is_valid_and_is_the_tutorials():
    """docs/params.md's tutorial recipe: overrides that params validation accepts, giving the seed tutorial's
    settings (BCE, no spectral norm, no EMA, no R1, its narrower D, γ starting at 0.01, batch 64)."""
    import re

    page = Path("docs/params.md").read_text()
    block = page.split("<!-- recipe: tutorial -->", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    overrides = {k: yaml.safe_load(v) for k, v in re.findall(r"-S ([\w.]+)=(\S+)", block)}
    p = with_override(Params(), overrides)
    assert (p.loss.type, p.attention.gamma_init, p.attention.value_bias) == ("bce", 0.01, True)
    assert not (p.model.spectral_norm_g or p.model.spectral_norm_d or p.train.ema)
    assert (p.train.r1, p.train.lecam, p.train.augment) == (0.0, 0.0, "none")
    assert (p.model.d_channels, p.model.d_extra_convs, p.train.batch_size) == (16, 0, 64)
    assert (p.train.lr_g, p.train.lr_d) == (0.0002, 0.0002)


def test_a_margin_is_a_plain_number_absolute_or_a_share():
    """`ablation.margin.<metric>`: a number keeps meaning absolute (as every older record has it); a mapping
    {share, of} is a share of the reference cell's value or of its gap to the floor; either is one value in
    the flat params (one MLflow param), and label_value spells both as the records do."""
    from pipeline.config import ShareMargin, label_value

    p = with_override(Params(), {"ablation.margin.fid": 3, "ablation.margin.classifier_score": {"share": 0.2, "of": "gap"}})
    assert p.ablation.margin.fid == 3.0 and p.ablation.margin.classifier_score == ShareMargin(0.2, "gap")
    assert with_override(Params(), {"ablation.margin.fid": {"share": 0.05}}).ablation.margin.fid == ShareMargin(0.05, "cell")
    assert p.flat()["ablation.margin.classifier_score"] == {"share": 0.2, "of": "gap"}
    assert parse_params(p.to_dict()) == p  # round trip through params.yaml
    assert label_value("ablation.margin.fid", "3.0") == label_value("ablation.margin.fid", 3) == "3.0"
    assert label_value("ablation.margin.fid", '{"share": 0.1, "of": "cell"}') == \
        label_value("ablation.margin.fid", ShareMargin(0.1, "cell"))

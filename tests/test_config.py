"""params.yaml validation: every bad value names the key, the value and what is allowed."""
import dataclasses
from pathlib import Path

import pytest
import yaml

from pipeline.config import ParamsError, Params, load_params, parse_params, with_override


def _yaml_leaves(node, prefix: str = "") -> dict:
    """params.yaml's keys as dotted names, read with yaml alone: a grid's axes and each margin are one
    value each (a mapping), as params.yaml writes them."""
    out = {}
    for k, v in node.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key != "ablation.axes" and prefix != "ablation.margin.":
            out.update(_yaml_leaves(v, key + "."))
        else:
            out[key] = v
    return out


def _typed(p: Params, key: str):
    """The typed object's value of a dotted key, reached attribute by attribute (not through flat())."""
    for part in key.split("."):
        p = getattr(p, part)
    return p


def _same(typed, raw) -> bool:
    """The typed value is the YAML value: equal, and of the same kind (a bool is not 0 or 1, a string is not
    a number; an integer may stand for a float field's value); a margin's {share, of} is its dataclass."""
    if dataclasses.is_dataclass(typed):
        typed = dataclasses.asdict(typed)
    if isinstance(raw, dict):
        return isinstance(typed, dict) and typed.keys() == raw.keys() and all(_same(typed[k], raw[k]) for k in raw)
    if isinstance(raw, list):
        return isinstance(typed, (list, tuple)) and len(typed) == len(raw) and all(map(_same, typed, raw))
    if isinstance(raw, bool) or raw is None or isinstance(raw, str):
        return type(typed) is type(raw) and typed == raw
    if isinstance(raw, float):
        return type(typed) is float and typed == raw
    return type(typed) in (int, float) and typed == raw  # an int in YAML: an int field, or a float field's value


def _other_values(key: str, value) -> list:
    """Values to try in place of params.yaml's for `key` (the first one params validation accepts is used)."""
    import typing

    from pipeline.config import param_type

    tp = param_type(key)
    if typing.get_origin(tp) is typing.Literal:
        out = list(typing.get_args(tp))
    elif isinstance(value, bool):
        out = [not value]
    elif isinstance(value, int):
        out = [value + 1, value - 1, value + 2]
    elif isinstance(value, float):
        out = [value / 2, value * 0.9, 0.5, 0.01]
    elif isinstance(value, str) or value is None:
        out = [f"{value or ''}-other"]
    elif isinstance(value, list):
        out = [value[:1], value[::-1], value[:-1], []]
    elif isinstance(value, dict):  # the grid's axes; a margin's {share, of}
        out = [{**value, "share": 0.2}, {k: v for k, v in value.items() if k != next(iter(value))}, 0.5]
    else:
        out = []
    return [v for v in out if not _same(v, value) if not (isinstance(v, dict) and not v)]


def test_shipped_params_are_valid():
    """Every key of the shipped params.yaml (read with yaml alone) reaches the typed params with its value,
    and the typed params have no key params.yaml lacks. As the shipped values are also the defaults (a parser
    that ignored the file would pass that), each key is also set, alone, to another valid value, which must
    reach the typed params in its turn."""
    import copy

    text = yaml.safe_load(Path("params.yaml").read_text())
    raw = _yaml_leaves(text)
    p = load_params("params.yaml")
    wrong = {k: (v, _typed(p, k)) for k, v in raw.items() if not _same(_typed(p, k), v)}
    assert not wrong, f"params.yaml value -> typed value: {wrong}"
    assert set(p.flat()) == set(raw)
    # keys that take another value only beside another key's (a rule across keys)
    beside = {"train.augment_target": {"train.augment": "translation"}}
    untried, lost = [], {}
    for key, value in raw.items():
        for other in _other_values(key, value):
            edited = copy.deepcopy(text)
            for k, v in {**beside.get(key, {}), key: other}.items():
                *parents, leaf = k.split(".")
                node = edited
                for part in parents:
                    node = node[part]
                node[leaf] = v
            try:
                typed = _typed(parse_params(edited), key)
            except ParamsError:
                continue
            if not _same(typed, other):
                lost[key] = (other, typed)
            break
        else:
            untried.append(key)
    assert not lost, f"a value set in params.yaml -> what the typed params hold: {lost}"
    assert not untried, f"no other valid value found to try for {untried}: extend _other_values"


def test_defaults_match_the_shipped_file():
    """params.yaml holds the defaults (its header, docs/params.md's `default` column and the README's `dvc
    repro` on the default params): Params() equals it key by key."""
    raw = _yaml_leaves(yaml.safe_load(Path("params.yaml").read_text()))
    wrong = {k: (v, _typed(Params(), k)) for k, v in raw.items() if not _same(_typed(Params(), k), v)}
    assert not wrong, f"params.yaml value -> Params() default: {wrong}"
    assert set(Params().flat()) == set(raw)


# (key, value, what the message says is allowed): types, ranges, choices, NaN and infinity, lists, names; every
# case of the check_params stage lives here (tests/test_pipeline.py runs a few of each kind through the stage)
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
    ("train.lr_g", "nan", "a number"),          # what `-S train.lr_g=nan` writes: YAML's `nan` is a string
    ("train.lr_g", float("nan"), "a finite number"),
    ("train.lr_d", float("inf"), "a finite number"),
    ("train.lr_d", -0.0001, "> 0.0"),
    ("train.lr_d", "fast", "a number"),
    ("train.beta1_g", 1.5, "<= 0.999"),
    ("train.beta2_d", 1.5, "<= 0.99999"),
    ("train.ema", "yes", "true or false"),
    ("train.ema_decay", 2, "<= 1.0"),
    ("train.lr_decay", "cosine", "one of none | linear"),
    ("train.lr_decay_from", 1.5, "<= 0.99"),
    ("train.d_steps", 0, ">= 1"),
    ("train.augment", "flip", "one of none | translation | translation_cutout"),
    ("train.eval_n", 5, ">= 10"),
    ("train.checkpoint_every", 0, ">= 1"),
    ("train.device", "tpu", "one of auto | cpu | cuda"),
    ("train.precision", "fp8", "one of auto | fp32 | bf16"),
    ("train.compile", "maybe", "one of auto | true | false"),
    ("train.attention_kernel", "fast", "one of auto | kernel | sdpa"),
    ("train.threads", -2, ">= 0"),
    ("data.source", "kaggle", "one of embedded | torchvision | idx_dir"),
    ("data.holdout_fraction", 0.0, "> 0.0"),
    ("model.z_dim", 0, ">= 1"),
    ("model.g_attention_at", [14, 21], "drawn from [14, 28]"),
    ("model.d_attention_at", [28], "drawn from [14, 7]"),
    ("model.spectral_norm_d", 2, "true or false"),
    ("model.d_extra_convs", 9, "<= 8"),
    ("seed", -1, ">= 0"),
    ("evaluate.n_samples", 5, ">= 10"),
    ("evaluate.k", 0, ">= 1"),
    ("evaluate.splits", 0, ">= 1"),
    ("evaluate.classifier.epochs", 0, ">= 1"),
    ("evaluate.classifier.lr", "nan", "a number"),
    ("evaluate.classifier_b.epochs", 0, ">= 1"),
    ("evaluate.classifier_b.arch", "resnet", "one of lenet | cnn"),
    ("evaluate.classifier_b.lr", 0, "> 0.0"),
    ("evaluate.classifier_b.seed", 0, "a seed other than evaluate.classifier.seed = 0"),
    ("sample.n", "all", "an integer"),
    ("sample.grid_rows", 0, ">= 1"),
    ("mlflow.experiment", " ", "without leading or trailing spaces"),
    ("mlflow.connect_timeout_s", 0, "> 0.0"),
    ("ablation.jobs", 0, ">= 1"),
    ("ablation.axes", {"attention.positon": ["pre"]}, "did you mean 'attention.position'"),
    ("ablation.axes", {"loss.type": ["hinge", "l2"]}, "loss.type"),
    ("ablation.seeds", [1, 1], "distinct"),
    ("ablation.margin.fid", "ten", "a number or a mapping {share: a number, of: one of cell | gap}"),
    ("ablation.margin.fid", 0, "> 0.0"),
    ("ablation.margin.fid", [0.1], "a number or a mapping"),
    ("ablation.margin.fid", {"share": 2, "of": "cell"}, "`ablation.margin.fid.share` = 2.0 is invalid: expected a number > 0.0 and <= 1.0"),
    ("ablation.margin.classifier_score", {"share": 0.1, "of": "floor"}, "one of cell | gap"),
]


def _named(msg: str, key: str) -> bool:
    """The message's one line starts by naming `key` (or a key under it: an axis, a margin's share)."""
    import re

    return "\n" not in msg and re.match(rf"params\.yaml: `{re.escape(key)}(\.[\w.]+)?` ", msg) is not None


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
    assert _named(msg, key), msg
    assert allowed in msg


# rules across keys: (overrides, the key the message names, what it says is allowed)
CROSS = [
    ({"data.source": "idx_dir"}, "data.idx_dir", "a folder path when data.source = idx_dir"),
    ({"evaluate.n_samples": 300000}, "evaluate.n_samples", "at most sample.n = 200000"),
    ({"evaluate.draws": 21}, "evaluate.draws", "at most sample.n / evaluate.n_samples = 200000 / 10000"),
    ({"train.ema_start": 20000}, "train.ema_start", "less than train.steps = 12000"),
    ({"sample.n": 200, "evaluate.n_samples": 100, "evaluate.draws": 2, "sample.grid_rows": 20}, "sample.grid_rows",
     "at most sqrt(sample.n = 200)"),
    ({"mlflow.register_model": "m", "mlflow.log_model": False}, "mlflow.register_model",
     "while mlflow.log_model is false"),
]
if not __import__("torch").cuda.is_available():
    CROSS.append(({"train.device": "cuda"}, "train.device", "auto or cpu on this machine (no CUDA device is visible)"))


@pytest.mark.parametrize("overrides,key,allowed", CROSS, ids=[",".join(f"{k}={v}" for k, v in o.items()) for o, *_ in CROSS])
def test_rules_across_keys_name_the_key_and_the_other(overrides, key, allowed):
    with pytest.raises(ParamsError) as e:
        with_override(Params(), overrides)
    msg = str(e.value)
    assert _named(msg, key), msg
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

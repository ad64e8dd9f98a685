"""A grid's cells: what their axes say, labelled one way whichever way a value was spelled, found again in
MLflow by their params (a real SQLite store; no server, no DVC)."""
import mlflow
import pytest

from pipeline.config import Params, ParamsError, cell_label, label_value, with_override
from pipeline.grid.core import finished_cells
from pipeline.grid.spec import GridSpec


def grid_params(axes: dict, **ablation) -> Params:
    return with_override(Params(), {"ablation.axes": axes, **{f"ablation.{k}": v for k, v in ablation.items()}})


@pytest.mark.parametrize("key,spellings,label", [
    ("train.ema", [True, "True", "true"], "true"),
    ("attention.gamma_init", [0, 0.0, "0", "0.0"], "0.0"),
    ("train.lr_g", [0.0004, "0.0004", 4e-4, "4e-4"], "0.0004"),
    ("model.g_attention_at", [[14, 28], "[14, 28]", "[14,28]"], "[14,28]"),
    ("train.compile", [True, "True", "true"], "true"),
    ("attention.position", ["pre"], "pre"),
])
def test_yaml_cli_and_mlflow_spellings_give_one_label(key, spellings, label):
    assert {label_value(key, v) for v in spellings} == {label}


def test_a_budget_axis_wins_over_the_grids_budget():
    p = grid_params({"train.steps": [20, 30], "loss.type": ["hinge"]}, steps=5000, seeds=[0, 1])
    spec = GridSpec.from_params(p)
    cells = spec.cells()
    assert [c.label for c in cells] == ["train.steps=20,loss.type=hinge", "train.steps=30,loss.type=hinge"] * 2
    for cell in cells:
        over = spec.overrides(cell)
        run = with_override(p, over)  # what the run's params.yaml will hold, validated as params.yaml is
        steps = dict(cell.values)["train.steps"]
        assert run.train.steps == steps and run.seed == cell.seed
        assert run.train.eval_every == steps // 5 and run.train.ema_start < steps  # follow the cell's budget
        assert run.grid_cell() == cell.label


def test_a_sample_size_axis_wins_and_the_evaluation_follows_it():
    p = grid_params({"sample.n": [200, 400]}, n_samples=1000, steps=20)
    spec = GridSpec.from_params(p)
    for cell in spec.cells():
        run = with_override(p, spec.overrides(cell))
        assert run.sample.n == dict(cell.values)["sample.n"] == run.evaluate.n_samples * run.evaluate.draws


def test_each_run_samples_every_draw_it_evaluates():
    p = grid_params({"loss.type": ["hinge"]}, n_samples=500, steps=20)
    spec = GridSpec.from_params(p)
    run = with_override(p, spec.overrides(spec.cells()[0]))
    assert run.evaluate.n_samples == 500 and run.sample.n == 500 * p.evaluate.draws == 500 * run.evaluate.draws
    # fewer draws for a smoke grid (`--draws 2`): each run samples and evaluates two draws of n_samples
    smoke = GridSpec.from_params(p, draws=2)
    run = with_override(p, smoke.overrides(smoke.cells()[0]))
    assert (run.evaluate.draws, run.evaluate.n_samples, run.sample.n) == (2, 500, 1000)


def test_no_log_model_turns_off_every_runs_mlflow_model_and_nothing_else():
    """`grid run --no-log-model` (the smoke grid): no run logs its generator as an MLflow model."""
    p = grid_params({"loss.type": ["hinge", "bce"]}, n_samples=500, steps=20)
    default, smoke = GridSpec.from_params(p), GridSpec.from_params(p, log_model=False)
    for cell in default.cells():
        assert with_override(p, default.overrides(cell)).mlflow.log_model is p.mlflow.log_model is True
        with_model, without = default.overrides(cell), smoke.overrides(cell)
        assert without.pop("mlflow.log_model") is False
        with_model.pop("mlflow.log_model")
        assert with_model == without


def test_a_grid_registers_no_model_even_where_params_yaml_asks_for_it():
    p = with_override(grid_params({"loss.type": ["hinge", "bce"]}, steps=20), {"mlflow.register_model": "mine"})
    spec = GridSpec.from_params(p)
    assert {with_override(p, spec.overrides(c)).mlflow.register_model for c in spec.cells()} == {""}


@pytest.mark.parametrize("axes,words", [
    ({"seed": [1, 2]}, "ablation.seeds"),
    ({"mlflow.grid": ["a", "b"]}, "ablation.name"),
    ({"train.threads": [1, 2]}, "cores"),
    ({"data.split_seed": [0, 1]}, "one prepared dataset"),
    ({"attention.position": ["post", "post"]}, "listed twice"),
    ({"attention.gamma_init": [0, 0.0]}, "listed twice"),
    ({}, "at least one axis"),
    ({"attention.position": []}, "non-empty"),
    ({"loss.type": ["hinge", "mse"]}, "one of hinge | bce"),
])
def test_bad_axes_are_refused_in_one_line_naming_the_key(axes, words):
    with pytest.raises(ParamsError) as e:
        grid_params(axes)
    msg = str(e.value)
    assert "\n" not in msg and "ablation.axes" in msg and words in msg, msg


def test_every_override_path_runs_the_rules_across_keys():
    with pytest.raises(ParamsError, match="train.ema_start"):
        with_override(Params(), {"train.steps": 100})  # ema_start 200 >= steps
    with pytest.raises(ParamsError, match="evaluate.n_samples"):
        with_override(Params(), {"sample.n": 100})  # evaluates 10,000 of 100 samples
    with pytest.raises(ParamsError, match="evaluate.draws"):
        with_override(Params(), {"sample.n": 100_000})  # 20 draws of 10,000 of 100,000 samples


def test_a_finished_cell_logged_through_mlflows_strings_is_found(tmp_path, monkeypatch):
    """A run whose params MLflow keeps as strings ('True', '0.0') and whose grid.cell tag was spelled
    another way (older code) is the finished cell of the grid: `grid run` skips it."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    p = grid_params({"train.ema": [True, False], "attention.gamma_init": [0]}, name="g", seeds=[3])
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment(p.mlflow.experiment)
    run = client.create_run(exp, tags={"grid.name": "g", "grid.seed": "3",
                                       "grid.cell": "train.ema=True,attention.gamma_init=0"})
    for k, v in {"train.ema": True, "attention.gamma_init": 0.0, "seed": 3}.items():
        client.log_param(run.info.run_id, k, v)  # stored as 'True', '0.0'
    client.log_metric(run.info.run_id, "fid", 12.5)
    client.set_terminated(run.info.run_id, "FINISHED")
    done = finished_cells(p, "g")
    (first, second) = GridSpec.from_params(p).cells()
    assert first.label == "train.ema=true,attention.gamma_init=0.0"
    assert done == {(first.label, 3): run.info.run_id}
    assert (second.label, 3) not in done
    assert cell_label(p.ablation.axes, client.get_run(run.info.run_id).data.params) == first.label


def test_a_grids_runs_carry_its_own_ablation_block(monkeypatch):
    """A run's params (and so its record) say the grid it ran in: its name, budget, seeds and sample size as
    the grid command got them, params.yaml's margins; not params.yaml's stale block (grid18k's records say
    `default`, 5,000 steps, seeds 0-9)."""
    import yaml

    from pipeline.grid import cli
    from pipeline.grid.cell import params_text

    p = with_override(Params(), {"ablation.name": "default", "ablation.steps": 5000, "ablation.seeds": list(range(10)),
                                 "ablation.margin.fid": 3.0})
    spec = GridSpec.from_params(p, name="grid18k", steps=18000, seeds=[2, 3], n_samples=500, jobs=2)
    for cell in spec.cells():
        run = with_override(p, spec.overrides(cell))  # what every runner gives the run (DVC's as -S)
        assert (run.ablation.name, run.ablation.steps, run.ablation.seeds, run.ablation.n_samples) == \
            ("grid18k", 18000, [2, 3], 500)
        assert run.ablation.margin == p.ablation.margin and run.flat()["ablation.margin.fid"] == 3.0
    # the command line: the runners get the grid's params, the report params.yaml's (another grid: its own folder)
    got = {}
    monkeypatch.setattr(cli, "load_params", lambda: p)
    monkeypatch.setattr(cli, "run_grid", lambda gp, sp, *a, **k: got.update(p=gp, spec=sp) or [])
    assert cli.main(["run", "--name", "smoke", "--steps", "300", "--seeds", "4", "5", "--no-report"]) == 0
    text = yaml.safe_load(params_text(got["p"], got["spec"], got["spec"].cells()[0], 1))
    assert {k: text["ablation"][k] for k in ("name", "steps", "seeds")} == {"name": "smoke", "steps": 300, "seeds": [4, 5]}
    assert got["p"].ablation.name == "smoke" and text["ablation"]["margin"]["fid"] == 3.0

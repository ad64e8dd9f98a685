"""One grid, one batch: `grid run` refuses to resume a grid where its new runs would be another batch than
its finished ones (another CPU design or class, precision, training code, metrics code or evaluator), before
it starts anything (a real SQLite MLflow store; the end-to-end refusal on a real grid: tests/test_grid.py)."""
import mlflow
import pytest

from pipeline.config import Params, with_override
from pipeline.errors import UserError
from pipeline.grid.batch import check_one_batch, skipped_fields, tags_here
from pipeline.grid.core import run_grid
from pipeline.grid.spec import GridSpec

ZEN5 = {"machine.cpu_uarch": "AMD Zen 5 (family 26 model 2)", "machine.cpu_class": "avx512", "machine.gpu": "none",
        "runtime.device": "cpu", "runtime.precision": "bf16", "git.commit": "0" * 40, "metrics.version": "2",
        "evaluator.sha256": "ab" * 32}


def test_runs_of_the_same_batch_pass():
    check_one_batch("g", [ZEN5, ZEN5], dict(ZEN5))
    check_one_batch("g", [], {**ZEN5, "runtime.precision": "fp32"})  # nothing finished: any batch starts it


@pytest.mark.parametrize("change,field", [
    ({"machine.cpu_uarch": "AMD Zen 3 (family 25 model 1)", "machine.cpu_class": "avx2"}, "machine"),
    ({"machine.cpu_class": "avx2"}, "machine"),  # the same CPU held to AVX2 is another class
    ({"runtime.precision": "fp32"}, "precision"),
    ({"metrics.version": "3"}, "metrics code"),
    ({"evaluator.sha256": "cd" * 32}, "evaluator"),
    ({"runtime.device": "cuda:0", "machine.gpu": "NVIDIA H200"}, "device"),
])
def test_a_run_of_another_batch_is_refused_naming_what_differs_and_the_way_out(change, field):
    with pytest.raises(UserError) as e:
        check_one_batch("g", [ZEN5] * 3, {**ZEN5, **change})
    msg = str(e.value)
    assert "grid 'g'" in msg and "3 finished" in msg and f"{field}:" in msg and "--allow-new-batch" in msg, msg


def test_the_device_index_and_an_axis_varied_field_are_not_a_new_batch():
    check_one_batch("g", [{**ZEN5, "runtime.device": "cuda:1", "machine.gpu": "H200"}],
                    {**ZEN5, "runtime.device": "cuda:0", "machine.gpu": "H200"})
    axes = {"train.precision": ["bf16", "fp32"], "loss.type": ["hinge"]}
    check_one_batch("g", [ZEN5], {**ZEN5, "runtime.precision": "fp32"}, skip=skipped_fields(axes))


def test_on_ray_only_the_code_and_evaluator_are_compared():
    """The cluster's machines run a Ray grid's runs, not the driver's."""
    other_machine = {**ZEN5, "machine.cpu_uarch": "Intel (family 6 model 167)", "machine.cpu_class": "amx"}
    check_one_batch("g", [ZEN5], other_machine, machine_too=False)
    with pytest.raises(UserError, match="evaluator:"):
        check_one_batch("g", [ZEN5], {**other_machine, "evaluator.sha256": "cd" * 32}, machine_too=False)


def test_a_grid_resumed_as_another_batch_starts_nothing(tmp_path, monkeypatch):
    """A finished run from another machine class in the store: `run_grid` refuses before the parent run or
    any cell's run exists; --allow-new-batch is the way to mix knowingly."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    p = with_override(Params(), {"ablation.axes": {"loss.type": ["hinge"]}, "ablation.name": "g",
                                 "ablation.seeds": [0, 1], "ablation.steps": 300})
    spec = GridSpec.from_params(p)
    here = tags_here(p, spec)
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment(p.mlflow.experiment)
    elsewhere = {**here, "machine.cpu_uarch": "elsewhere (family 0 model 0)", "machine.cpu_class": "baseline"}
    run = client.create_run(exp, tags={**elsewhere, "grid.name": "g", "grid.seed": "0"})
    client.log_param(run.info.run_id, "loss.type", "hinge")
    client.log_metric(run.info.run_id, "fid", 40.0)
    client.set_terminated(run.info.run_id, "FINISHED")
    with pytest.raises(UserError, match="machine: elsewhere"):
        run_grid(p, spec, "local")
    assert [r.info.run_id for r in client.search_runs([exp])] == [run.info.run_id]

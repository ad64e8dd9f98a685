"""DVC stage `report`: reports/ablation.md from the run records of the grid `ablation.name` (results/<grid>/)."""
from pipeline.cli import run_stage
from pipeline.report import write_report

if __name__ == "__main__":
    run_stage("report", lambda params: write_report(params))

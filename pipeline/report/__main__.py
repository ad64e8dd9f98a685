"""`python -m pipeline.report [--grid NAME] [--seeds ...]`: write a grid's report (pipeline.report.write.main)."""
from pipeline.report.write import main

if __name__ == "__main__":
    raise SystemExit(main())

import sys

from pipeline.grid.cli import main

sys.exit(main())

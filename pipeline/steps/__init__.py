"""The work of each DVC stage, as a function of the validated params (`main(p)`): stages/<name>.py is its
entry point (`python -m stages.<name>`), and the grid's one-process cell (pipeline/grid/cell.py) calls
train, sample and evaluate in turn."""

"""Thin entry points of the DVC stages (dvc.yaml): each parses params.yaml, then calls pipeline/."""

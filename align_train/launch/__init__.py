"""Launching at scale: the launcher a run is under (accelerate, DeepSpeed, FSDP), checked at start,
and SLURM job scripts rendered for a recipe (``align-launch``). The configs are in ``launch/``."""

"""Resolving a run, before Ray starts: flags, experiment files, --resume, defaults, the RunSpec, the experiment dir."""

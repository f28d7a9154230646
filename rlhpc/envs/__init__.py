"""Envs: finding them by name, probing them before Ray starts, adapting old-gym and multi-agent ones."""

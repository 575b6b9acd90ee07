"""Experiment configs: one ``get_config(arg)`` per file; shared defaults in :mod:`configs.base`."""

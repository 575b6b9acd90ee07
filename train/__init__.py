"""jaxlab's training side: the loop, steps, state, sharding, data, checkpoints, outputs.

``python -m train --config configs/NAME.py[:ARG] --workdir DIR [--config.key=value ...]``
"""

"""PyTorch references of jaxlab's CNN, MLP, char Transformer LM and LSTM LM (benchmarks only).

Never imported by the package or its tests; ``python -m train.benchmark --config ... --torch``
loads it lazily and runs the model matching the config on the same batch and optimizer.
"""
from experiments.torch_reference.bench import benchmark, hparams_of, matmul_peak  # noqa: F401

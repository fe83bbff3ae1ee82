"""tfx-serving-pipeline: a TFX 1.16 pipeline from CSV to a model proven live on TensorFlow Serving."""
from setuptools import find_packages, setup

setup(
    name="tfx-serving-pipeline",
    version="0.1.0",
    description="TFX pipeline from CSV to a validated model served by TensorFlow Serving",
    python_requires=">=3.9,<3.11",
    packages=find_packages(include=["pipeline", "pipeline.*", "components", "components.*",
                                    "serving", "serving.*"]),
    package_data={"serving": ["k8s/*.yaml"], "pipeline.metadata.render": ["templates/*.html"],
                  "pipeline.ui": ["templates/*.html"]},
    # The exact, tested resolution is requirements/lock.txt; these are the direct dependencies.
    install_requires=[
        "tfx==1.16.0",
        "tensorflow==2.16.2",
        "tf-keras==2.16.0",
        "tensorflow-transform==1.16.0",
        "tensorflow-model-analysis==0.47.1",
        "tensorflow-serving-api==2.16.1",
        "ml-metadata==1.16.0",
        "apache-beam==2.59.0",
        "grpcio==1.66.2",
        "protobuf==3.20.3",
        "aiohttp==3.14.5",
        "jinja2==3.1.6",
        "orjson==3.13.0",
        "click==8.5.1",
        "rich==15.0.0",
        "prometheus-client==0.26.0",
    ],
    entry_points={"console_scripts": ["tfxsp=pipeline.cli.main:main"]},
)

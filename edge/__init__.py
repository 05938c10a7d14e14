# The one version of cat-iot: pyproject.toml reads it, `cat-edge --version` and
# `cat-aggregator --version` print it, package.json (mpremote mip) carries it.
__version__ = "0.1.0"

"""The counting distribution lives in :mod:`metarl.testing` so worker processes can import it."""

from metarl.testing import CountingDistribution, CountingEnv, ElementwisePolicy, counting_oracle

__all__ = ["CountingDistribution", "CountingEnv", "ElementwisePolicy", "counting_oracle"]

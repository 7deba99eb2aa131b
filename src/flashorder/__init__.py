"""flashorder: a flash-sale order service that never oversells."""

__version__ = "0.1.0"

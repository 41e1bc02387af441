"""index-ticker: real-time calculation and streaming of the MOEX equity indices."""

__version__ = "0.1.0"

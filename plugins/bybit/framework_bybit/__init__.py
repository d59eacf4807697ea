"""Bybit v5 linear driver for framework (ccxt ``bybit`` + private stream)."""

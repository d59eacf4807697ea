"""Binance USDⓈ-M futures driver for framework (ccxt ``binanceusdm`` + user data stream)."""

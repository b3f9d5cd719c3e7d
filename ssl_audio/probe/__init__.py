"""Probing toolkit: frozen-encoder transfer with the standard metrics."""

"""Shared blocks of the trunk; no training code."""

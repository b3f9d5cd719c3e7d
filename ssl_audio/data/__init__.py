"""Data: manifests, datasets, length-bucketed batching and collation."""

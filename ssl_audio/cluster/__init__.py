"""HuBERT's pseudo-labels: feature dumping, faiss k-means, label files, cluster quality, the iterative driver."""

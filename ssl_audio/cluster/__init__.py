"""HuBERT's labels: feature dumping, faiss k-means, cluster quality, the iterate driver."""

from ssl_audio.cluster.blas import select_blas_kernel

select_blas_kernel()  # here, before any module of the package imports faiss: OpenBLAS reads the choice once

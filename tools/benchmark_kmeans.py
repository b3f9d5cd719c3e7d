"""Benchmark of the clustering stage: faiss k-means (ssl_audio) against fairseq's scikit-learn MiniBatchKMeans.

Both fit the same N x D float32 features: a synthetic mixture of Gaussians with more true clusters than k
(overlapping clusters in a low-dimensional subspace plus ambient noise, unequal weights), so the task looks
like clustering speech features rather than separating blobs. Each method runs in its own subprocess with
the same thread budget (OMP/MKL/OpenBLAS variables, threadpoolctl, faiss.omp_set_num_threads), after a
warm-up; its peak memory is the growth of the process's RSS during the fit, polled every 10 ms, or the
growth of ru_maxrss if larger (both see native allocations, which tracemalloc does not).
faiss runs once per iteration count given (`--faiss-iterations 50 20`), so one run shows how far the
iterations can be cut before its held-out inertia falls behind sklearn's.

Reported: wall time of the fit, peak memory growth, held-out inertia (mean squared distance of unseen points
to their nearest centroid, computed the same way for both), label assignment throughput (faiss
`index.search`, frames per second) and MFCC feature dumping throughput (`dump_features`, audio seconds
per second). Target: faiss >= 10x faster at equal or lower held-out inertia.

    python tools/benchmark_kmeans.py                      # N=200k, D=768, k=500, 2 threads
    python tools/benchmark_kmeans.py --points 50000 --sklearn-n-init 3   # a quicker look
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ssl_audio.cluster.blas import blas_kernels, select_blas_kernel

REPO = Path(__file__).resolve().parents[1]
LATENT_DIM = 32  # intrinsic dimension of the synthetic features
SAMPLE_RATE = 16_000


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


class RssPeak:
    """Highest resident set size seen while the block runs (polled every 10 ms), minus the RSS at its start.

    Polling sees native allocations (faiss, BLAS, OpenMP buffers) that tracemalloc misses, and unlike
    ru_maxrss it is not masked by a higher peak earlier in the process.
    """

    def __enter__(self) -> RssPeak:
        import threading

        import psutil

        self._process = psutil.Process()
        self.start = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.start


def make_features(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """n points of a mixture of `clusters` Gaussians: centres and spreads in a LATENT_DIM subspace, plus noise.

    Centres ~ N(0, 2^2) in the subspace with per-cluster spreads in [0.5, 1.5] (neighbouring clusters
    overlap), mapped to `dim` dimensions by a random matrix, plus N(0, 0.3^2) ambient noise. Cluster weights
    follow a Zipf-like law (a few frequent "phones", a long tail), as frame labels do.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2.0, (clusters, LATENT_DIM))
    spreads = rng.uniform(0.5, 1.5, clusters)
    weights = 1.0 / np.arange(1, clusters + 1) ** 0.8
    weights = rng.permutation(weights / weights.sum())
    mixing = (rng.standard_normal((LATENT_DIM, dim)) / np.sqrt(LATENT_DIM)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 50_000):  # bounded temporaries
        m = min(50_000, n - start)
        which = rng.choice(clusters, size=m, p=weights)
        latent = centres[which] + spreads[which, None] * rng.standard_normal((m, LATENT_DIM))
        out[start : start + m] = latent.astype(np.float32) @ mixing
        out[start : start + m] += rng.normal(0, 0.3, (m, dim)).astype(np.float32)
    return out


def mean_squared_distance(points: np.ndarray, centroids: np.ndarray) -> float:
    """Mean over points of the squared distance to the nearest centroid (float64, chunked)."""
    c = centroids.astype(np.float64)
    c2 = (c**2).sum(1)
    total = 0.0
    for start in range(0, len(points), 4096):
        x = points[start : start + 4096].astype(np.float64)
        d = (x**2).sum(1)[:, None] + c2[None, :] - 2 * x @ c.T
        total += float(np.maximum(d.min(axis=1), 0).sum())
    return total / len(points)


# --- workers (one subprocess each) ------------------------------------------------------------------------


def worker_fit(method: str, data: Path, heldout: Path, args: argparse.Namespace) -> dict:
    import faiss
    from sklearn.cluster import MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    from ssl_audio.cluster.kmeans import fit_kmeans

    faiss.omp_set_num_threads(args.threads)
    x = np.load(data)
    held = np.load(heldout)
    with threadpool_limits(limits=args.threads):  # warm up (OpenMP pools, lazy imports): not part of the fit
        if method == "sklearn":
            MiniBatchKMeans(n_clusters=2, n_init=1, batch_size=256, random_state=0).fit(x[:512])
        else:
            faiss.Kmeans(x.shape[1], 2, niter=2).train(np.ascontiguousarray(x[:512]))
    before = peak_rss_bytes()  # after the imports and the data: the growth is the method's own
    with threadpool_limits(limits=args.threads), RssPeak() as rss:
        start = time.perf_counter()
        if method.startswith("faiss"):
            iterations = int(method.removeprefix("faiss"))
            result = fit_kmeans(x, args.k, iterations=iterations, restarts=args.faiss_restarts, seed=0)
            centroids = result.centroids
            extra = {"iterations": iterations, "empty_clusters": result.empty, "tiny_clusters": result.tiny}
        else:
            model = MiniBatchKMeans(  # fairseq examples/hubert/simple_kmeans/learn_kmeans.py
                n_clusters=args.k,
                init="k-means++",
                max_iter=args.sklearn_max_iter,
                batch_size=10_000,
                verbose=0,
                compute_labels=False,
                tol=0.0,
                max_no_improvement=100,
                init_size=None,
                n_init=args.sklearn_n_init,
                reassignment_ratio=0.0,
                random_state=0,
            )
            model.fit(x)
            centroids = model.cluster_centers_.astype(np.float32)
            extra = {"steps": int(model.n_steps_), "epochs": int(model.n_iter_)}
        seconds = time.perf_counter() - start
    with threadpool_limits(limits=args.threads):
        heldout_mse = mean_squared_distance(held, centroids)
        train_mse = mean_squared_distance(x[: len(held)], centroids)
    return {
        "method": method,
        "seconds": seconds,
        "polled_rss_growth_bytes": rss.growth,
        "ru_maxrss_growth_bytes": peak_rss_bytes() - before,
        "peak_bytes": max(rss.growth, peak_rss_bytes() - before),  # the larger, to be safe
        "heldout_mse": heldout_mse,
        "train_mse": train_mse,
        **extra,
    }


def worker_assign(data: Path, args: argparse.Namespace) -> dict:
    import faiss

    faiss.omp_set_num_threads(args.threads)
    x = np.load(data)
    rng = np.random.default_rng(1)
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(np.ascontiguousarray(x[rng.choice(len(x), args.k, replace=False)]))
    index.search(x[:1000], 1)  # warm up
    start = time.perf_counter()
    for block in range(0, len(x), 50_000):  # blocks, as assign_labels searches one utterance at a time
        index.search(x[block : block + 50_000], 1)
    seconds = time.perf_counter() - start
    return {"frames": len(x), "seconds": seconds, "frames_per_second": len(x) / seconds}


def worker_dump(args: argparse.Namespace, threads: int) -> dict:
    import soundfile as sf
    import torch

    from ssl_audio.cluster.features import FeatureSource, dump_features
    from ssl_audio.data.manifest import build_manifests, load_manifest

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "audio").mkdir()
        rng = np.random.default_rng(0)
        per_file = 12.0  # seconds: utterance-sized files
        files = max(1, round(args.dump_seconds / per_file))
        for i in range(files):
            n = int(per_file * SAMPLE_RATE)
            t = np.arange(n) / SAMPLE_RATE
            wave = 0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t * (1 + t / 10)) + 0.05 * rng.standard_normal(n)
            sf.write(root / "audio" / f"u{i:03d}.wav", wave.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
        build_manifests([root / "audio"], root / "manifest", valid_fraction=0.0)
        manifest = load_manifest(root / "manifest" / "train.tsv")
        start = time.perf_counter()
        dump_features(manifest, FeatureSource(name="mfcc"), root / "feats")
        seconds = time.perf_counter() - start
    return {
        "audio_seconds": manifest.seconds,
        "seconds": seconds,
        "audio_seconds_per_second": manifest.seconds / seconds,
    }


# --- driver -----------------------------------------------------------------------------------------------


def run_worker(kind: str, args: argparse.Namespace, data: Path, heldout: Path, timeout: float | None) -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "MKL_NUM_THREADS": str(args.threads),
        "OPENBLAS_NUM_THREADS": str(args.threads),
        # As ssl_audio sets on import (ssl_audio/__init__.py), but here before faiss/torch load OpenMP.
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        "PYTHONPATH": str(REPO),
    }
    select_blas_kernel(env)  # the worker imports faiss itself: choose its OpenBLAS kernel first
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--data",
        str(data),
        "--heldout-path",
        str(heldout),
        *sys.argv[1:],
    ]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"method": kind, "timed_out": timeout}
    if done.returncode != 0:
        raise RuntimeError(f"worker {kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--points", type=int, default=200_000, help="training frames N")
    p.add_argument("--dim", type=int, default=768, help="feature dimension D")
    p.add_argument("--k", type=int, default=500, help="clusters")
    p.add_argument("--true-clusters", type=int, default=None, help="mixture components (default 4k)")
    p.add_argument("--heldout", type=int, default=20_000, help="held-out frames for inertia")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--faiss-iterations", type=int, nargs="+", default=[50, 20], help="one faiss row per count (kmeans fit: 50)"
    )
    p.add_argument("--faiss-restarts", type=int, default=1)
    p.add_argument("--sklearn-n-init", type=int, default=20, help="fairseq: 20")
    p.add_argument("--sklearn-max-iter", type=int, default=100, help="fairseq: 100")
    p.add_argument("--sklearn-timeout", type=float, default=3600, help="seconds before sklearn is given up")
    p.add_argument("--skip-sklearn", action="store_true")
    p.add_argument("--dump-seconds", type=float, default=120.0, help="audio for the MFCC dumping throughput")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--data", default=None, help=argparse.SUPPRESS)
    p.add_argument("--heldout-path", default=None, help=argparse.SUPPRESS)
    args, _ = p.parse_known_args()
    if args.worker:
        if args.worker.startswith("faiss") or args.worker == "sklearn":
            result = worker_fit(args.worker, Path(args.data), Path(args.heldout_path), args)
        elif args.worker == "assign":
            result = worker_assign(Path(args.data), args)
        else:
            result = worker_dump(args, threads=int(args.worker.removeprefix("dump")))
        print(json.dumps({**result, "blas": blas_kernels()}))
        return

    clusters = args.true_clusters or 4 * args.k
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        data, heldout = Path(tmp) / "train.npy", Path(tmp) / "heldout.npy"
        start = time.perf_counter()
        both = make_features(args.points + args.heldout, args.dim, clusters, args.seed)
        np.save(data, both[: args.points])
        np.save(heldout, both[args.points :])
        del both
        print(
            f"generated {args.points} + {args.heldout} x {args.dim} features ({clusters} true clusters) "
            f"in {time.perf_counter() - start:.0f} s",
            file=sys.stderr,
        )
        results = {}
        for iterations in args.faiss_iterations:
            results[f"faiss{iterations}"] = run_worker(f"faiss{iterations}", args, data, heldout, None)
            print(f"faiss{iterations}: {results[f'faiss{iterations}']}", file=sys.stderr)
        if not args.skip_sklearn:
            results["sklearn"] = run_worker("sklearn", args, data, heldout, args.sklearn_timeout)
            print(f"sklearn: {results['sklearn']}", file=sys.stderr)
        results["assign"] = run_worker("assign", args, data, heldout, None)
        for threads in sorted({args.threads, 1}, reverse=True):
            results[f"dump{threads}"] = run_worker(f"dump{threads}", args, data, heldout, None)
    load_end = os.getloadavg()[0]
    results["settings"] = {
        **{k: v for k, v in vars(args).items() if k not in ("worker", "data", "heldout_path")},
        "true_clusters": clusters,
        "load_average_at_start": load,
        "load_average_at_end": load_end,
        "cpus": os.cpu_count(),
    }
    print_table(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def kernels(result: dict) -> str:
    """The OpenBLAS kernels a worker ran with, e.g. `faiss_cpu: SkylakeX, numpy: SkylakeX`."""
    return ", ".join(f"{package}: {arch}" for package, arch in sorted(result.get("blas", {}).items())) or "-"


def print_table(results: dict, args: argparse.Namespace) -> None:
    gib = 2**30
    settings = results["settings"]
    print(
        f"\nk-means on {args.points} x {args.dim} float32 (k={args.k}, {settings['true_clusters']} true clusters, "
        f"{args.threads} threads; 1-min load average {settings['load_average_at_start']:.1f} at the start, "
        f"{settings['load_average_at_end']:.1f} at the end, on {settings['cpus']} CPUs)\n"
    )
    rows = [
        (f"faiss (fit_kmeans){' default' if n == 50 else ''}", f"{n} iterations, greedy k-means++", f"faiss{n}")
        for n in args.faiss_iterations
    ]
    rows.append(
        (
            "sklearn MiniBatchKMeans (fairseq)",
            f"n_init {args.sklearn_n_init}, max_iter {args.sklearn_max_iter}, batch 10000",
            "sklearn",
        )
    )
    print(
        "| method | settings | fit wall time (s) | peak memory (GiB) | held-out inertia (MSE/frame) | train MSE "
        "| BLAS kernel |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, setting, key in rows:
        r = results.get(key)
        if r is None:
            continue
        if "timed_out" in r:
            print(f"| {name} | {setting} | > {r['timed_out']:.0f} (timed out) | - | - | - | - |")
            continue
        steps = f" ({r['steps']} steps)" if "steps" in r else ""
        print(
            f"| {name} | {setting}{steps} | {r['seconds']:.1f} | {r['peak_bytes'] / gib:.2f} | "
            f"{r['heldout_mse']:.4f} | {r['train_mse']:.4f} | {kernels(r)} |"
        )
    s = results.get("sklearn")
    if s and "timed_out" not in s:
        verdicts = []
        for n in args.faiss_iterations:
            f = results[f"faiss{n}"]
            speedup, ratio = s["seconds"] / f["seconds"], f["heldout_mse"] / s["heldout_mse"]
            print(
                f"| ratio faiss {n} iterations / sklearn | | {1 / speedup:.3f} ({speedup:.1f}x faster) | "
                f"{f['peak_bytes'] / max(s['peak_bytes'], 1):.2f} | {ratio:.4f} | "
                f"{f['train_mse'] / s['train_mse']:.4f} | |"
            )
            met = "met" if speedup >= 10 and ratio <= 1.0 else "NOT met"
            verdicts.append(f"{n} iterations: {met} ({speedup:.1f}x, held-out inertia ratio {ratio:.4f})")
        print("\nTarget (faiss >= 10x faster than sklearn at equal or lower held-out inertia): " + "; ".join(verdicts))
    a = results["assign"]
    print("\n| throughput | value | BLAS kernel |")
    print("|---|---|---|")
    print(
        f"| label assignment (faiss IndexFlatL2.search, k={args.k}, D={args.dim}, {args.threads} threads) | "
        f"{a['frames_per_second']:,.0f} frames/s ({a['frames_per_second'] / 50:,.0f} audio-s/s at 50 Hz) | "
        f"{kernels(a)} |"
    )
    for threads in sorted({args.threads, 1}, reverse=True):
        d = results[f"dump{threads}"]
        print(
            f"| MFCC feature dumping (dump_features, {d['audio_seconds']:.0f} s of audio, {threads} torch thread(s)) | "
            f"{d['audio_seconds_per_second']:.1f} audio-s/s | {kernels(d)} |"
        )


if __name__ == "__main__":
    main()

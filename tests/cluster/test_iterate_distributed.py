"""hubert-iterate on many processes: shards dumped by every process, k-means by process 0, labels in parts.

Oracles: the files one process writes (`assign_labels` over all rows; a whole one-process hubert-iterate run),
compared byte for byte: a process layout must not change any feature, centroid, label or stage stamp.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest
import soundfile as sf
import yaml
from test_kmeans import TINY_HUBERT  # the same tiny round as the one-process tests

from ssl_audio.cluster.features import FeatureSet, FeatureSource, dump_features, shard_rows
from ssl_audio.cluster.kmeans import assign_labels, fit_kmeans, join_label_parts, save_kmeans
from ssl_audio.configs import from_dict
from ssl_audio.data.manifest import Manifest, build_manifests, load_manifest

SR = 16_000
REPO = Path(__file__).resolve().parents[2]


def write_clips(folder: Path, count: int, seed: int) -> None:
    """`count` clips of 1-1.6 s: a tone plus noise, 16-bit."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(count):
        n = int(rng.uniform(1.0, 1.6) * SR)
        wave = 0.4 * np.sin(2 * np.pi * rng.uniform(200, 2000) * np.arange(n) / SR) + 0.05 * rng.standard_normal(n)
        sf.write(folder / f"c{i}.wav", wave.astype(np.float32), SR, subtype="PCM_16")


# --- label parts, joined (fast) -------------------------------------------------------------------------------


class Fitted:
    """5 clips, their MFCCs and a k=4 model fitted on every frame; `whole` is one assign_labels call's file."""

    def __init__(self, root: Path) -> None:
        write_clips(root / "audio", 5, seed=1)
        build_manifests([root / "audio"], root / "manifest", valid_fraction=0.0)
        self.manifest: Manifest = load_manifest(root / "manifest" / "train.tsv")
        dump_features(self.manifest, FeatureSource(name="mfcc"), root / "features")
        self.features = FeatureSet(root / "features")
        self.km = root / "km.faiss"
        save_kmeans(self.km, fit_kmeans(np.concatenate(list(self.features)), 4, iterations=5), self.features)
        self.whole = assign_labels(self.km, self.features, self.manifest, root / "whole.labels").read_bytes()

    def parts(self, folder: Path, world: int) -> list[Path]:
        paths = [folder / f"part{r}.labels" for r in range(world)]
        for rank, path in enumerate(paths):
            rows = shard_rows(len(self.manifest), rank, world)
            assign_labels(self.km, self.features, self.manifest, path, rows=rows)
        return paths


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fitted]:
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # tiny problems: one thread is faster on shared cores
    yield Fitted(tmp_path_factory.mktemp("parts"))
    faiss.omp_set_num_threads(threads)


@pytest.mark.parametrize("world", [1, 2, 3, 7])  # 7 processes for 5 rows: two parts are empty
def test_joined_parts_equal_one_assignment_byte_for_byte(fitted: Fitted, tmp_path: Path, world: int) -> None:
    parts = fitted.parts(tmp_path, world)
    heads = [json.loads(p.read_text().splitlines()[0][1:]) for p in parts]
    assert [(h["first_row"], h["rows"]) for h in heads] == [
        (r * 5 // world, (r + 1) * 5 // world - r * 5 // world) for r in range(world)
    ]
    out = join_label_parts(parts, fitted.manifest, tmp_path / "joined.labels")
    assert out.read_bytes() == fitted.whole
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*(p.name for p in parts), "joined.labels"])


def test_join_refuses_parts_that_do_not_tile_the_manifest(fitted: Fitted, tmp_path: Path) -> None:
    parts = fitted.parts(tmp_path, 3)
    out = tmp_path / "train.labels"
    out.write_text("an older label file\n")
    cases = [
        ([parts[1], parts[0], parts[2]], rf"{parts[1]}:1: the part starts at row 1, expected row 0"),
        (parts[:2], rf"{out}: the parts hold 3 rows, the manifest 5"),
        ([parts[0], parts[0], parts[2]], rf"{parts[0]}:1: the part starts at row 0, expected row 1"),
    ]
    for given, message in cases:
        with pytest.raises(ValueError, match=message):
            join_label_parts(given, fitted.manifest, out)
    lines = parts[1].read_text().splitlines(keepends=True)
    parts[1].write_text(lines[0].replace('"kmeans": "', '"kmeans": "0') + "".join(lines[1:]))
    with pytest.raises(ValueError, match=rf"{parts[1]}:1: kmeans='0[0-9a-f]+', but {parts[0]} has '[0-9a-f]+'"):
        join_label_parts(parts, fitted.manifest, out)
    parts[1].write_text(lines[0] + "1 2 x\n")
    with pytest.raises(ValueError, match=rf"{parts[1]}:2: not a line of integer labels"):
        join_label_parts(parts, fitted.manifest, out)
    assert out.read_text() == "an older label file\n"  # a refused join keeps what was there
    assert not list(tmp_path.glob("*.tmp"))


def test_assign_refuses_rows_outside_the_manifest(fitted: Fitted, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"rows \[3, 6\) are not within the 5 rows of the manifest"):
        assign_labels(fitted.km, fitted.features, fitted.manifest, tmp_path / "p.labels", rows=(3, 6))
    assert not (tmp_path / "p.labels").exists()


def test_wait_minutes_is_checked() -> None:
    from ssl_audio.cluster.iterate import IterateConfig

    with pytest.raises(ValueError, match=r"config key 'wait_minutes': must be an integer >= 1, got 0"):
        from_dict({"wait_minutes": 0}, schema=IterateConfig)


# --- a real two-process run against a one-process run (slow) ------------------------------------------------


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    # One thread (faiss's k-means and search then run the same arithmetic in every layout), no GPU, no bars.
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", TQDM_DISABLE="1")
    return env


def iterate(recipe: Path, run_dir: Path, processes: int) -> subprocess.Popen:
    command = ["-m", "ssl_audio.cli", "hubert-iterate", str(recipe), f"run_dir={run_dir}"]
    if processes > 1:
        command = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *command]
    return subprocess.Popen(
        [sys.executable, *command], env=child_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-6000:]
    return out


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*")) if p.is_file()}


class Runs:
    """One round (MFCC, k=5, 2 updates) on 6 train + 2 valid clips: on one process, on two, and two again."""

    def __init__(self, root: Path) -> None:
        write_clips(root / "audio", 8, seed=0)
        build_manifests([root / "audio"], root / "manifest", valid_fraction=0.25)
        self.manifests = {s: load_manifest(root / "manifest" / f"{s}.tsv") for s in ("train", "valid")}
        pretrain = {**TINY_HUBERT, "data": {**TINY_HUBERT["data"], "manifest_dir": str(root / "manifest")}}
        recipe = root / "iterate.yaml"
        recipe.write_text(yaml.safe_dump({"pretrain": pretrain, "iterations": [
            {"k": 5, "max_points": 2_000, "kmeans_iterations": 5}]}))  # fmt: skip
        self.one, self.two = root / "one", root / "two"
        started = [iterate(recipe, self.one, 1), iterate(recipe, self.two, 2)]
        self.one_out, self.two_out = (finish(p) for p in started)
        self.before_again = mtimes(self.two)
        self.again_out = finish(iterate(recipe, self.two, 2))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(tmp_path_factory.mktemp("iterate_distributed"))


def frames(folder: Path) -> tuple[list[int], np.ndarray]:
    """Every shard's (lengths, frames) of a feature folder, in shard order: rows in manifest order."""
    metas = [json.loads(p.read_text()) for p in sorted(folder.glob("shard*of*.json"))]
    data = [np.fromfile(p, dtype=np.float32) for p in sorted(folder.glob("shard*of*.f32"))]
    return [n for m in metas for n in m["lengths"]], np.concatenate(data)


@pytest.mark.slow
def test_two_processes_write_what_one_process_writes(runs: Runs) -> None:
    for split, manifest in runs.manifests.items():
        two = runs.two / "iter1" / "features" / split
        assert sorted(p.name for p in two.glob("shard*")) == [
            "shard0000of0002.f32", "shard0000of0002.json", "shard0001of0002.f32", "shard0001of0002.json",
        ]  # fmt: skip
        half = len(manifest) // 2
        rows = [json.loads((two / f"shard000{r}of0002.json").read_text())["rows"] for r in (0, 1)]
        assert rows == [[0, half], [half, len(manifest)]]
        one_lengths, one_frames = frames(runs.one / "iter1" / "features" / split)
        two_lengths, two_frames = frames(two)
        assert one_lengths == two_lengths and len(one_lengths) == len(manifest)
        assert one_frames.tobytes() == two_frames.tobytes()
        name = f"iter1/labels/{split}.labels"
        assert (runs.two / name).read_bytes() == (runs.one / name).read_bytes()
    one_km, two_km = (faiss.read_index(str(run / "iter1" / "km.faiss")) for run in (runs.one, runs.two))
    assert two_km.ntotal == 5
    np.testing.assert_array_equal(two_km.reconstruct_n(0, 5), one_km.reconstruct_n(0, 5))
    assert (runs.two / "iter1/km.faiss.json").read_text() == (runs.one / "iter1/km.faiss.json").read_text()
    for stage in ("features/train", "features/valid", "kmeans", "labels/train", "labels/valid", "model"):
        name = f"iter1/{stage}/stage.json"
        assert (runs.two / name).read_text() == (runs.one / name).read_text(), name
    assert not list(runs.two.rglob("part*")) and not list(runs.two.rglob("*.tmp"))


@pytest.mark.slow
def test_both_processes_train_and_process_0_reports(runs: Runs) -> None:
    model = runs.two / "iter1" / "model"
    assert [p.name for p in model.glob("step_*")] == ["step_00000002"]
    assert "2 process(es)" in (model / "train.log").read_text()
    assert "1 process(es)" in (runs.one / "iter1" / "model" / "train.log").read_text()
    summary = json.loads((runs.two / "summary.json").read_text())
    assert [(s["iteration"], s["source"], s["k"]) for s in summary] == [(1, "mfcc", 5)]
    assert summary[0]["checkpoint"] == str(model / "step_00000002")
    assert runs.two_out.count("| iteration | source |") == 1  # one table, from process 0
    assert runs.two_out.count("k-means: inertia") == 1  # fitted once


@pytest.mark.slow
def test_two_processes_again_skip_every_stage(runs: Runs) -> None:
    after = mtimes(runs.two)
    assert {p: t for p, t in after.items() if p != "summary.json"} == {
        p: t for p, t in runs.before_again.items() if p != "summary.json"
    }
    assert "k-means: inertia" not in runs.again_out
    assert runs.again_out.count("| iteration | source |") == 1

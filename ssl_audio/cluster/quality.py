"""How well clusters match reference phone labels, as the HuBERT paper measures it (section IV-F).

With the joint distribution p(y, z) of phone y and cluster z over frames:
    phone purity   = sum_z p(z) max_y p(y | z)      (how pure each cluster is in phones)
    cluster purity = sum_y p(y) max_z p(z | y)      (how concentrated each phone is in one cluster)
    PNMI           = I(y; z) / H(y)                 (share of phone uncertainty the clusters explain)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssl_audio.data.alignments import FRAME_WINDOW, frame_labels, load_alignments


@dataclass(frozen=True, kw_only=True)
class ClusterQuality:
    phone_purity: float
    cluster_purity: float
    pnmi: float
    frames: int

    def line(self) -> str:
        return (
            f"phone purity {self.phone_purity:.3f}, cluster purity {self.cluster_purity:.3f}, "
            f"PNMI {self.pnmi:.3f} over {self.frames} frames"
        )


def joint_counts(clusters: Iterable[np.ndarray], phones: Iterable[Sequence[str]]) -> tuple[np.ndarray, list[str]]:
    """(phones, clusters) frame counts; each utterance's two sequences are cut to the shorter one."""
    names: dict[str, int] = {}
    pairs_y, pairs_z = [], []
    for z, y in zip(clusters, phones, strict=True):
        n = min(len(z), len(y))
        pairs_y.append(np.array([names.setdefault(p, len(names)) for p in y[:n]], dtype=np.int64))
        pairs_z.append(np.asarray(z[:n], dtype=np.int64))
    y_all, z_all = np.concatenate(pairs_y), np.concatenate(pairs_z)
    counts = np.zeros((len(names), int(z_all.max()) + 1 if len(z_all) else 0), dtype=np.int64)
    np.add.at(counts, (y_all, z_all), 1)
    return counts, list(names)


def cluster_quality(counts: np.ndarray) -> ClusterQuality:
    """Purities and PNMI from a (phones, clusters) count matrix."""
    total = counts.sum()
    if total == 0:
        raise ValueError("no frames to measure")
    p = counts / total
    py, pz = p.sum(axis=1), p.sum(axis=0)
    phone_purity = float(p.max(axis=0).sum())  # sum_z p(z) max_y p(y|z) = sum_z max_y p(y, z)
    cluster_purity = float(p.max(axis=1).sum())
    nz = p > 0
    mutual = float((p[nz] * np.log(p[nz] / (py[:, None] * pz[None, :])[nz])).sum())
    entropy = float(-(py[py > 0] * np.log(py[py > 0])).sum())
    return ClusterQuality(
        phone_purity=phone_purity,
        cluster_purity=cluster_purity,
        pnmi=mutual / entropy if entropy > 0 else 0.0,
        frames=int(total),
    )


def quality_against_alignments(
    labels: Sequence[np.ndarray],
    manifest_paths: Sequence[str],
    manifest_root: str,
    alignments_path: str,
    rate: float,
    *,
    window: int | None = None,
    offset: int | None = None,
) -> ClusterQuality:
    """Cluster quality of label rows against the demo corpus's phone alignments (matched by file).

    Label frame j is compared with the phone at its centre, offset + j * (16 kHz / rate) + window // 2: pass the
    labels' own window and offset (their header's; FrameLabels.window / .offset). None: 400 and 0 (MFCC frames,
    the conv stack's), what label files written before their header said it were measured with."""
    window, offset = FRAME_WINDOW if window is None else window, 0 if offset is None else offset
    alignments = load_alignments(alignments_path)
    corpus = Path(alignments_path).resolve().parent
    phones = []
    for rel in manifest_paths:
        audio = (Path(manifest_root) / rel).resolve()
        if not audio.is_relative_to(corpus):
            raise ValueError(f"{alignments_path}: describes {corpus}, but {audio} is outside it (drop `alignments`)")
        key = str(audio.relative_to(corpus))
        if key not in alignments:
            raise ValueError(f"{alignments_path}: no alignment for {key}")
        phones.append(frame_labels(alignments[key], rate, window, offset))
    counts, _ = joint_counts(labels, phones)
    return cluster_quality(counts)

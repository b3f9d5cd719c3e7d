"""Phone alignments of the demo corpus: contiguous segments in samples at 16 kHz, and per-frame labels.

Frame geometry (S samples at 16 kHz, window W = 400 samples = 25 ms, frame t covers [t*hop, t*hop + W)):
  50 Hz  hop 320: the conv extractor (kernels 10,3,3,3,3,2,2, strides 5,2,2,2,2,2,2; receptive field 400,
                  total stride 320) gives floor((S - 400) / 320) + 1 frames.
  100 Hz hop 160: kaldi-style MFCC with snip_edges=True (25 ms window, 10 ms shift) gives floor((S - 400) / 160) + 1.
Either way there are no frames when S < 400. A frame's label is the phone at its centre sample t*hop + W // 2.
Other front-ends pass their own window (and rate): e.g. the log-mel front-end's Whisper stem, 50 Hz with W = 1040,
or 16 x 16 spectrogram patches, 6.25 Hz (hop 2560) with W = 2800 (nn/frontend.py's framing contract). A centred
front-end also passes its offset O < 0 (Whisper's: -520): frame t covers [O + t*hop, O + t*hop + W), its centre is
O + t*hop + W // 2, and the frames are those of the audio padded by -O at each end whose centre lies in the audio.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from pathlib import Path

from ssl_audio.audio import SAMPLE_RATE

SILENCE = "sil"  # label for leading/trailing silence and espeak's pause phonemes
FRAME_WINDOW = 400  # samples at 16 kHz (25 ms): conv extractor receptive field and MFCC window


@dataclass(frozen=True, kw_only=True)
class Alignment:
    """Phones of one utterance: segment i is phones[i] over samples [starts[i], ends[i]) at 16 kHz."""

    path: str  # relative to the corpus directory
    num_samples: int  # length of the audio at 16 kHz; the segments cover [0, num_samples) exactly
    phones: tuple[str, ...]
    starts: tuple[int, ...]
    ends: tuple[int, ...]

    def __post_init__(self) -> None:
        problem = _coverage_problem(self)
        if problem:
            raise ValueError(f"alignment for {self.path}: {problem}")

    def phone_at(self, sample: int) -> str:
        """The phone covering `sample` (0 <= sample < num_samples)."""
        if not 0 <= sample < self.num_samples:
            raise ValueError(f"alignment for {self.path}: sample {sample} outside [0, {self.num_samples})")
        return self.phones[bisect.bisect_right(self.starts, sample) - 1]

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "num_samples": self.num_samples,
            "phones": list(self.phones),
            "starts": list(self.starts),
            "ends": list(self.ends),
        }


def _coverage_problem(a: Alignment) -> str:
    if not (len(a.phones) == len(a.starts) == len(a.ends)) or not a.phones:
        lengths = f"{len(a.phones)}/{len(a.starts)}/{len(a.ends)}"
        return f"phones/starts/ends must be non-empty and of equal length, got {lengths}"
    if a.starts[0] != 0 or a.ends[-1] != a.num_samples:
        return f"segments span [{a.starts[0]}, {a.ends[-1]}), expected [0, {a.num_samples})"
    for i, (start, end) in enumerate(zip(a.starts, a.ends)):
        if end <= start:
            return f"segment {i} ({a.phones[i]!r}) is empty: [{start}, {end})"
        if i and start != a.ends[i - 1]:
            return f"segment {i} starts at {start} but segment {i - 1} ends at {a.ends[i - 1]}"
    return ""


def alignment_from_dict(item: dict, source: str = "<dict>") -> Alignment:
    """Build an Alignment from its JSON object; missing keys and bad coverage raise ValueError naming `source`."""
    try:
        return Alignment(
            path=str(item["path"]),
            num_samples=int(item["num_samples"]),
            phones=tuple(str(p) for p in item["phones"]),
            starts=tuple(int(s) for s in item["starts"]),
            ends=tuple(int(e) for e in item["ends"]),
        )
    except KeyError as err:
        raise ValueError(f"{source}: missing key {err.args[0]!r}") from None
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: {err}") from None


def load_alignments(path: str | Path) -> dict[str, Alignment]:
    """Read alignments.jsonl into {relative audio path: Alignment}."""
    alignments: dict[str, Alignment] = {}
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            source = f"{path}:{line_number}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{source}: not JSON ({err.msg})") from None
            alignment = alignment_from_dict(item, source)
            if alignment.path in alignments:
                raise ValueError(f"{source}: duplicate path {alignment.path!r}")
            alignments[alignment.path] = alignment
    return alignments


def write_alignments(path: str | Path, alignments: list[Alignment]) -> None:
    """Write one compact JSON object per line, in the given order."""
    with open(path, "w", encoding="utf-8") as f:
        for alignment in alignments:
            f.write(json.dumps(alignment.to_json(), separators=(",", ":")) + "\n")


def frame_hop(frame_rate: float) -> int:
    """Hop in samples at 16 kHz of a frame rate that is a whole number of samples (320 at 50 Hz, 160 at 100 Hz)."""
    hop = SAMPLE_RATE / frame_rate if frame_rate > 0 else float("nan")
    if not abs(hop - round(hop)) < 1e-6:  # also catches NaN
        raise ValueError(f"frame_rate {frame_rate} Hz is not a whole number of samples per frame at {SAMPLE_RATE} Hz")
    return round(hop)


def num_frames(num_samples: int, frame_rate: float, window: int = FRAME_WINDOW) -> int:
    """Frames of `window` samples every `frame_hop(frame_rate)` samples: floor((S - window) / hop) + 1, or 0."""
    if num_samples < window:
        return 0
    return (num_samples - window) // frame_hop(frame_rate) + 1


def frame_labels(alignment: Alignment, frame_rate: float, window: int = FRAME_WINDOW, offset: int = 0) -> list[str]:
    """The phone at the centre of each frame: one label per frame of `num_frames(num_samples, frame_rate, window)`
    (offset 0), or of the audio padded by -offset at each end, up to the last centre inside the audio."""
    hop, first = frame_hop(frame_rate), offset + window // 2
    if first < 0:
        raise ValueError(f"frames of window {window} from sample {offset} are centred before the audio")
    count = num_frames(alignment.num_samples - 2 * offset, frame_rate, window)
    centres = (c for c in range(first, first + count * hop, hop) if c < alignment.num_samples)
    return [alignment.phone_at(centre) for centre in centres]

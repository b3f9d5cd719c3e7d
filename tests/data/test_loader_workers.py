"""DataLoader workers die with their parent: a SIGKILLed trainer leaves no workers behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ssl_audio.audio import SAMPLE_RATE
from ssl_audio.data.manifest import write_manifest

REPO = Path(__file__).resolve().parents[2]
# Torch's workers poll their parent every 5 s (MP_STATUS_CHECK_INTERVAL); with PR_SET_PDEATHSIG the kernel
# kills them at once. 1 s tells the two apart with room for a loaded machine.
EXIT_BOUND_SECONDS = 1.0

CHILD = textwrap.dedent(
    """
    import json, sys, time
    from ssl_audio.data.loader import make_file_loader
    from ssl_audio.data.manifest import load_manifest

    loader = make_file_loader(load_manifest(sys.argv[1]), max_samples=None, random_crop=False, max_batch_seconds=0.5,
                         max_batch_size=1, num_workers=2)
    next(iter(loader))
    print(json.dumps([worker.pid for worker in loader._iterator._workers]), flush=True)
    time.sleep(120)
    """
)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's zombie waits for init, which may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.slow  # a child Python that imports torch: ~10 s on 2 busy cores
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux only")
def test_workers_exit_promptly_when_the_parent_is_killed(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    rows = []
    for i in range(4):
        sf.write(audio / f"utt{i}.wav", np.full(4000, 0.1 * (i + 1), dtype=np.float32), SAMPLE_RATE, subtype="FLOAT")
        rows.append((f"utt{i}.wav", 4000))
    write_manifest(tmp_path / "train.tsv", audio, rows)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "train.tsv")], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        workers = json.loads(child.stdout.readline())
        assert len(workers) == 2 and all(alive(pid) for pid in workers)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        killed = time.monotonic()
        while any(alive(pid) for pid in workers) and time.monotonic() - killed < 10:
            time.sleep(0.01)
        took = time.monotonic() - killed
        assert not any(alive(pid) for pid in workers)
        assert took < EXIT_BOUND_SECONDS, f"workers outlived their killed parent by {took:.2f} s"
    finally:
        child.kill()
        child.wait()
        child.stdout.close()

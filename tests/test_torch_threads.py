"""$SSL_AUDIO_TORCH_THREADS: torch's intra-op thread count for one command, or a one-line error."""

from __future__ import annotations

import pytest
import torch

from ssl_audio.cli import main, set_torch_threads


def test_the_variable_sets_torch_threads_and_unset_leaves_them() -> None:
    before = torch.get_num_threads()
    try:
        assert set_torch_threads({}) is None and torch.get_num_threads() == before
        assert set_torch_threads({"SSL_AUDIO_TORCH_THREADS": "1"}) == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_bad_count_is_one_line(value: str, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SSL_AUDIO_TORCH_THREADS", value)
    assert main(["probe-report", "/nonexistent"]) == 2
    assert capsys.readouterr().err == (
        f"ssl-audio probe-report: error: SSL_AUDIO_TORCH_THREADS={value!r}: expected a thread count >= 1\n"
    )

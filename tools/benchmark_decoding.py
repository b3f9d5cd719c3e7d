"""Decoding at realistic sizes, and the hybrid CTC/attention pieces trained together on a toy task.

`speed`: wall time of CTC prefix beam search (T = 250 frames: 5 s at 50 Hz; V = 32 characters) and of the
attention decoder's greedy / beam / joint CTC-attention search (ESPnet-size decoder: 6 layers, width 256,
2048 feed-forward; memory 250 x 768 like a BASE encoder; at most 60 labels; an untrained decoder, so the
beam stops whenever its random scores let a finished hypothesis beat the live ones). One thread.

`toy`: a decoder and a linear CTC head trained with hybrid_loss on synthetic "encoder outputs" (each label a
fixed random vector for 1-2 frames then a blank frame, plus noise and sinusoidal positions, since an encoder's
output knows where it is), then exact-sequence accuracy of CTC greedy, attention greedy, attention beam and
joint CTC/attention beam on held-out utterances.

    python tools/benchmark_decoding.py speed
    python tools/benchmark_decoding.py toy --steps 300
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import Tensor, nn

from ssl_audio.models.ctc_decoding import ctc_greedy_batch, ctc_prefix_beam_search
from ssl_audio.models.seq2seq import Seq2SeqConfig, Seq2SeqDecoder, decoder_targets, hybrid_loss, sinusoids
from ssl_audio.models.seq2seq_search import beam_search, beam_search_batch, greedy_search

FRAMES, CHARACTERS, ENCODER_WIDTH, MAX_LABELS = 250, 32, 768, 60


def timed(label: str, call) -> None:
    start = time.perf_counter()
    result = call()
    best = result[0] if result else []
    tokens = best.tokens if hasattr(best, "tokens") else best  # a hypothesis, or greedy's label list
    print(f"{label}: {time.perf_counter() - start:.2f} s, best hypothesis {len(tokens)} labels")


def speed() -> None:
    torch.manual_seed(0)
    log_probs = (3 * torch.randn(FRAMES, CHARACTERS)).log_softmax(-1)
    for beam, token_beam in [(10, None), (10, 8), (32, None)]:
        timed(
            f"CTC prefix beam T={FRAMES} V={CHARACTERS} beam={beam} token_beam={token_beam}",
            lambda beam=beam, token_beam=token_beam: ctc_prefix_beam_search(
                log_probs, beam=beam, token_beam=token_beam
            ),
        )
    decoder = Seq2SeqDecoder(Seq2SeqConfig(vocab_size=CHARACTERS, memory_dim=ENCODER_WIDTH)).eval()
    memory = torch.randn(FRAMES, ENCODER_WIDTH)
    timed(f"attention greedy, {MAX_LABELS} labels", lambda: greedy_search(decoder, memory[None], max_len=MAX_LABELS))
    for weight in (0.0, 0.3):
        timed(
            f"attention beam 10, pre_beam 15, ctc_weight {weight}, {MAX_LABELS} labels",
            lambda weight=weight: beam_search(
                decoder, memory, beam=10, max_len=MAX_LABELS, ctc_log_probs=log_probs, ctc_weight=weight, pre_beam=15
            ),
        )


def toy_batch(size: int, table: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(B, T, M) memory, (B,) frames, (B, U) labels, (B,) label counts; labels 1..4, blank vector table[0]."""
    labels, features = [], []
    for _ in range(size):
        y = torch.randint(1, 5, (int(torch.randint(2, 6, (1,), generator=generator)),), generator=generator)
        pieces = []
        for c in y.tolist():
            pieces += [table[c].repeat(int(torch.randint(1, 3, (1,), generator=generator)), 1), table[0][None]]
        frames = torch.cat(pieces)
        noise = 0.3 * torch.randn(frames.shape, generator=generator)
        labels.append(y)
        features.append(frames + noise + sinusoids(len(frames), table.shape[1]))
    memory = torch.zeros(size, max(len(f) for f in features), table.shape[1])
    padded = torch.zeros(size, max(len(y) for y in labels), dtype=torch.long)
    for i, (f, y) in enumerate(zip(features, labels)):
        memory[i, : len(f)], padded[i, : len(y)] = f, y
    return memory, torch.tensor([len(f) for f in features]), padded, torch.tensor([len(y) for y in labels])


def toy(steps: int, seed: int) -> None:
    torch.manual_seed(seed)
    vocab, width, eos = 6, 16, 5  # blank 0, labels 1..4, sos = eos = 5
    table = torch.randn(vocab, width)
    config = Seq2SeqConfig(vocab_size=vocab, memory_dim=width, dim=32, layers=1, heads=2, ffn=64, dropout=0.0)
    decoder, ctc_head = Seq2SeqDecoder(config), nn.Linear(width, vocab)
    optimizer = torch.optim.Adam([*decoder.parameters(), *ctc_head.parameters()], lr=3e-3)
    generator = torch.Generator().manual_seed(seed + 1)
    start = time.perf_counter()
    for step in range(steps):
        memory, frames, labels, lengths = toy_batch(16, table, generator)
        padding = torch.arange(memory.shape[1])[None] >= frames[:, None]
        targets = decoder_targets(labels, lengths, sos=eos, eos=eos)
        out = hybrid_loss(
            ctc_head(memory), frames, decoder(targets.inputs, memory, padding), targets, labels, lengths,
            ctc_weight=config.ctc_weight, label_smoothing=config.label_smoothing,
        )  # fmt: skip
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step}: ctc {out.ctc.item():.3f} attention {out.attention.item():.3f}")
    print(f"trained {steps} steps in {time.perf_counter() - start:.1f} s")
    decoder.eval()
    memory, frames, labels, lengths = toy_batch(64, table, torch.Generator().manual_seed(seed + 2))
    references = [labels[i, : lengths[i]].tolist() for i in range(len(lengths))]
    with torch.no_grad():
        log_probs = ctc_head(memory).log_softmax(-1)
    results = {
        "CTC greedy": ctc_greedy_batch(log_probs, frames),
        "attention greedy": greedy_search(decoder, memory, frames, max_len=8),
        "attention beam 4": [list(h[0].tokens) for h in beam_search_batch(decoder, memory, frames, beam=4, max_len=8)],
        "joint beam 4, ctc_weight 0.3": [
            list(h[0].tokens)
            for h in beam_search_batch(
                decoder, memory, frames, beam=4, max_len=8, ctc_log_probs=log_probs, ctc_weight=0.3
            )
        ],
    }
    for name, hypotheses in results.items():
        right = sum(h == r for h, r in zip(hypotheses, references))
        print(f"{name}: {right}/{len(references)} utterances exactly right")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("speed")
    toy_parser = sub.add_parser("toy")
    toy_parser.add_argument("--steps", type=int, default=300)
    toy_parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.command == "speed":
        speed()
    else:
        toy(args.steps, args.seed)


if __name__ == "__main__":
    main()

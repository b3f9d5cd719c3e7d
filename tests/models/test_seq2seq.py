"""The seq2seq decoder, the hybrid CTC/attention loss and the attention / joint beam search, against
independent oracles: hand-built targets, a label-smoothed cross-entropy written out in fp64, ctc_loss and
brute-force enumeration of CTC alignments, exhaustive search over every label sequence up to max_len."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from ssl_audio.models.ctc_prefix_score import CTCPrefixScorer
from ssl_audio.models.seq2seq import IGNORE, Seq2SeqConfig, Seq2SeqDecoder, decoder_targets, hybrid_loss
from ssl_audio.models.seq2seq_search import beam_search, beam_search_batch, greedy_search

VOCAB, MEMORY_DIM = 4, 6  # blank 0, labels 1 and 2, sos = eos = 3
LABELS = (1, 2)
EOS = 3


def tiny_decoder(positions: str = "sinusoidal", seed: int = 0, dtype: torch.dtype = torch.float32) -> Seq2SeqDecoder:
    torch.manual_seed(seed)
    config = Seq2SeqConfig(
        vocab_size=VOCAB, memory_dim=MEMORY_DIM, dim=8, layers=2, heads=2, ffn=16, dropout=0.0, positions=positions
    )
    decoder = Seq2SeqDecoder(config).to(dtype).eval()
    with torch.no_grad():
        decoder.out.weight.mul_(4.0)  # peakier next-token distributions than the default init gives
    return decoder


def memory_of(frames: int, seed: int, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, frames, MEMORY_DIM, generator=torch.Generator().manual_seed(seed))


def collapse(path: tuple[int, ...], blank: int = 0) -> tuple[int, ...]:
    out, previous = [], None
    for token in path:
        if token != previous and token != blank:
            out.append(token)
        previous = token
    return tuple(out)


def ctc_sequence_probs(log_probs: torch.Tensor) -> dict[tuple[int, ...], float]:
    """p(y | x) for every label sequence y, summing exp(path score) over all V^T paths (fp64)."""
    rows = log_probs.double()
    totals: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(rows.shape[1]), repeat=rows.shape[0]):
        score = math.fsum(rows[t, c].item() for t, c in enumerate(path))
        totals[collapse(path)] = totals.get(collapse(path), 0.0) + math.exp(score)
    return totals


def teacher_forced_log_prob(decoder: Seq2SeqDecoder, memory: torch.Tensor, tokens: tuple[int, ...]) -> float:
    """Σ log p_att(y_i | y_<i) + log p_att(eos | y) from one teacher-forced pass over [sos y]."""
    inputs = torch.tensor([[EOS, *tokens]])
    with torch.no_grad():
        log_probs = decoder(inputs, memory[None]).double().log_softmax(-1)[0]  # (U + 1, V)
    return math.fsum(log_probs[u, c].item() for u, c in enumerate((*tokens, EOS)))


def all_sequences(max_len: int) -> list[tuple[int, ...]]:
    return [y for n in range(max_len + 1) for y in itertools.product(LABELS, repeat=n)]


# --- targets and the loss -------------------------------------------------------------------------------------


def test_decoder_targets_hand_case() -> None:
    labels = torch.tensor([[1, 2, 1], [2, 0, 0], [0, 0, 0]])
    targets = decoder_targets(labels, torch.tensor([3, 1, 0]), sos=5, eos=3)
    assert targets.inputs.tolist() == [[5, 1, 2, 1], [5, 2, 3, 3], [5, 3, 3, 3]]
    assert targets.outputs.tolist() == [[1, 2, 1, 3], [2, 3, IGNORE, IGNORE], [3, IGNORE, IGNORE, IGNORE]]


def test_hybrid_loss_term_by_term_in_fp64() -> None:
    generator = torch.Generator().manual_seed(1)
    decoder = tiny_decoder(dtype=torch.float64)
    labels = torch.tensor([[1, 2, 2], [2, 1, 0], [1, 0, 0]])
    label_lengths = torch.tensor([3, 2, 1])
    frame_lengths = torch.tensor([6, 5, 2])
    memory = torch.randn(3, 6, MEMORY_DIM, generator=generator, dtype=torch.float64)
    ctc_logits = torch.randn(3, 6, VOCAB, generator=generator, dtype=torch.float64)
    targets = decoder_targets(labels, label_lengths, sos=EOS, eos=EOS)
    padding = torch.arange(6)[None, :] >= frame_lengths[:, None]
    logits = decoder(targets.inputs, memory, padding)
    weight, smoothing = 0.3, 0.1
    got = hybrid_loss(
        ctc_logits, frame_lengths, logits, targets, labels, label_lengths, ctc_weight=weight, label_smoothing=smoothing
    )
    # CTC: -log p(y | x) per utterance, mean over utterances; p(y | x) by brute force over all 4^T paths
    per_utterance = []
    for b in range(3):
        probs = ctc_sequence_probs(ctc_logits[b, : frame_lengths[b]].log_softmax(-1))
        y = tuple(labels[b, : label_lengths[b]].tolist())
        per_utterance.append(-math.log(probs[y]))
    ctc_oracle = math.fsum(per_utterance) / 3
    reference = (
        nn.functional.ctc_loss(
            ctc_logits.log_softmax(-1).transpose(0, 1), labels, frame_lengths, label_lengths, reduction="sum"
        )
        / 3
    )
    assert got.ctc.dtype == torch.float64
    assert got.ctc.item() == pytest.approx(ctc_oracle, abs=1e-12)
    assert got.ctc.item() == pytest.approx(reference.item(), abs=1e-12)
    # attention: (1 - ε)·(-log p_y) + ε·mean_v(-log p_v) summed over every [y eos] token, mean over utterances
    terms = []
    for b in range(3):
        outputs = [*labels[b, : label_lengths[b]].tolist(), EOS]
        log_probs = logits[b].log_softmax(-1)
        for u, y in enumerate(outputs):
            terms.append((1 - smoothing) * -log_probs[u, y].item() + smoothing * -log_probs[u].mean().item())
    attention_oracle = math.fsum(terms) / 3
    assert len(terms) == 9
    assert got.attention.item() == pytest.approx(attention_oracle, abs=1e-12)
    assert got.attention.item() == pytest.approx(
        nn.functional.cross_entropy(
            logits.flatten(0, 1), targets.outputs.flatten(), ignore_index=IGNORE, label_smoothing=smoothing
        ).item()
        * 9
        / 3,
        abs=1e-12,
    )
    assert got.loss.item() == pytest.approx(weight * ctc_oracle + (1 - weight) * attention_oracle, abs=1e-12)
    right = sum(
        int(logits[b, u].argmax()) == y
        for b in range(3)
        for u, y in enumerate([*labels[b, : label_lengths[b]].tolist(), EOS])
    )
    assert got.accuracy.item() == pytest.approx(right / 9, abs=1e-12)


def test_hybrid_loss_half_precision_inputs_give_fp32_and_impossible_targets_add_zero() -> None:
    generator = torch.Generator().manual_seed(2)
    ctc_logits = torch.randn(2, 4, VOCAB, generator=generator)
    decoder_logits = torch.randn(2, 4, VOCAB, generator=generator)
    labels = torch.tensor([[1, 2, 1], [1, 1, 1]])
    lengths = torch.tensor([3, 3])
    frames = torch.tensor([4, 4])  # [1 1 1] needs 5 frames (blanks between repeats): impossible in 4
    targets = decoder_targets(labels, lengths, sos=EOS, eos=EOS)
    got = hybrid_loss(
        ctc_logits.bfloat16(), frames, decoder_logits.bfloat16(), targets, labels, lengths, ctc_weight=0.5,
        label_smoothing=0.0,
    )  # fmt: skip
    assert got.ctc.dtype == torch.float32 and got.attention.dtype == torch.float32
    assert math.isfinite(got.loss.item())
    # the possible utterance alone, from the same bf16-rounded logits: the impossible one adds 0 to the mean
    possible = nn.functional.ctc_loss(
        ctc_logits.bfloat16().float()[:1].log_softmax(-1).transpose(0, 1), labels[:1], frames[:1], lengths[:1],
        reduction="sum",
    )  # fmt: skip
    assert got.ctc.item() == pytest.approx(possible.item() / 2, rel=1e-6)


def test_hybrid_loss_under_autocast_is_fp32_and_backpropagates() -> None:
    generator = torch.Generator().manual_seed(3)
    decoder = tiny_decoder()
    ctc_head = nn.Linear(MEMORY_DIM, VOCAB)
    memory = torch.randn(2, 5, MEMORY_DIM, generator=generator)
    labels, lengths, frames = torch.tensor([[1, 2], [2, 0]]), torch.tensor([2, 1]), torch.tensor([5, 3])
    targets = decoder_targets(labels, lengths, sos=EOS, eos=EOS)
    decoder.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ctc_logits = ctc_head(memory)
        logits = decoder(targets.inputs, memory)
        got = hybrid_loss(ctc_logits, frames, logits, targets, labels, lengths, ctc_weight=0.3, label_smoothing=0.1)
    assert ctc_logits.dtype == torch.bfloat16 and got.loss.dtype == torch.float32
    got.loss.backward()
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all() for p in [*decoder.parameters(), *ctc_head.parameters()]
    )


@pytest.mark.parametrize(("bad", "message"), [(0, "label 0 at utterance 1, position 1 is the blank"), (4, "label 4")])
def test_hybrid_loss_rejects_blank_or_out_of_vocabulary_labels(bad: int, message: str) -> None:
    labels = torch.tensor([[1, 2], [2, bad]])
    lengths = torch.tensor([1, 2])  # utterance 0's second slot is padding: any value is fine there
    labels[0, 1] = 0
    targets = decoder_targets(labels, lengths, sos=EOS, eos=EOS)
    with pytest.raises(ValueError, match=message):
        hybrid_loss(
            torch.zeros(2, 5, VOCAB), torch.tensor([5, 5]), torch.zeros(2, 3, VOCAB), targets, labels, lengths,
            ctc_weight=0.3, label_smoothing=0.1,
        )  # fmt: skip


# --- the decoder -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
def test_decoder_is_causal(positions: str) -> None:
    decoder = tiny_decoder(positions)
    memory = memory_of(5, seed=3)
    tokens = torch.tensor([[EOS, 1, 2, 2, 1, 1]])
    changed = tokens.clone()
    changed[0, 3] = 1
    with torch.no_grad():
        before, after = decoder(tokens, memory), decoder(changed, memory)
    # masked keys get softmax weight exactly 0; 1e-6 leaves room for kernels that block the sums differently
    torch.testing.assert_close(after[:, :3], before[:, :3], rtol=0, atol=1e-6)
    assert (after[:, 3:] - before[:, 3:]).abs().amax(-1).min() > 1e-3  # position 3 on all change


@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
def test_memory_padding_changes_nothing(positions: str) -> None:
    decoder = tiny_decoder(positions)
    memory = memory_of(7, seed=4, batch=2)
    lengths = torch.tensor([7, 4])
    padding = torch.arange(7)[None, :] >= lengths[:, None]
    tokens = torch.tensor([[EOS, 1, 2, 1], [EOS, 2, 2, 1]])
    with torch.no_grad():
        padded = decoder(tokens, memory, padding)
        alone = decoder(tokens[1:], memory[1:, :4])
        garbage = memory.clone()
        garbage[1, 4:] = 1e3
        padded_garbage = decoder(tokens, garbage, padding)
    # fp32 attention over <= 7 frames of width 8: a few ulps of O(10) logits
    torch.testing.assert_close(padded[1], alone[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(padded_garbage, padded, rtol=0, atol=1e-5)
    batched = greedy_search(decoder, garbage, lengths, max_len=6)
    assert batched == [greedy_search(decoder, garbage[b : b + 1, : lengths[b]], max_len=6)[0] for b in range(2)]


@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
def test_incremental_steps_equal_the_full_forward(positions: str) -> None:
    decoder = tiny_decoder(positions)
    memory = memory_of(7, seed=5, batch=2)
    padding = torch.arange(7)[None, :] >= torch.tensor([7, 5])[:, None]
    tokens = torch.tensor([[EOS, 1, 2, 2, 1], [EOS, 2, 1, 1, 1]])
    with torch.no_grad():
        full = decoder(tokens, memory, padding)
        cache = decoder.memory_cache(memory)
        state = decoder.initial_state(2)
        steps = []
        for u in range(tokens.shape[1]):
            logits, state = decoder.step(tokens[:, u], state, memory, padding, cache=cache)
            steps.append(logits)
    # the same fp32 arithmetic grouped differently (one query row at a time): a few ulps of O(10) logits
    torch.testing.assert_close(torch.stack(steps, dim=1), full, rtol=0, atol=1e-5)
    assert state.length == 5 and state.past[0][0].shape == (2, 2, 5, 4)
    reordered = state.select(torch.tensor([1, 1, 0]))
    torch.testing.assert_close(reordered.past[1][1][2], state.past[1][1][0], rtol=0, atol=0)


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match="seq2seq.positions"):
        Seq2SeqConfig(vocab_size=4, memory_dim=6, positions="rotary")
    with pytest.raises(ValueError, match="seq2seq.dim 10 is not divisible by seq2seq.heads 4"):
        Seq2SeqConfig(vocab_size=4, memory_dim=6, dim=10)
    with pytest.raises(ValueError, match="seq2seq.blank_id 3 must differ"):
        Seq2SeqConfig(vocab_size=4, memory_dim=6, blank_id=3)
    with pytest.raises(ValueError, match=r"memory must be \(B=1, T, M=6\)"):
        tiny_decoder()(torch.tensor([[EOS]]), torch.zeros(1, 3, 5))


# --- search --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_attention_beam_equals_exhaustive_search(seed: int) -> None:
    decoder = tiny_decoder(seed=seed)
    memory = memory_of(5, seed=10 + seed)[0]
    max_len = 3
    exact = {y: teacher_forced_log_prob(decoder, memory, y) for y in all_sequences(max_len)}
    # 2 labels and 3 steps: at most 2^2 live hypotheses x 3 next tokens = 12 candidates a step; a beam of 16
    # keeps every one, so the search is exhaustive
    hypotheses = beam_search(decoder, memory, beam=16, max_len=max_len)
    best = max(exact, key=exact.__getitem__)
    assert hypotheses[0].tokens == best
    # fp32 logits of differently batched passes, 4 terms: 1e-5 is ample
    assert hypotheses[0].score == pytest.approx(exact[best], abs=1e-5)
    for h in hypotheses:
        assert h.attention == pytest.approx(exact[h.tokens], abs=1e-5) and h.ctc is None
    # the batched helper and a one-wide beam (= greedy)
    [batched] = beam_search_batch(decoder, memory[None], beam=16, max_len=max_len)
    assert [h.tokens for h in batched] == [h.tokens for h in hypotheses]
    one = beam_search(decoder, memory, beam=1, max_len=max_len)
    assert [h.tokens for h in one] == [tuple(greedy_search(decoder, memory[None], max_len=max_len)[0])]


def test_length_normalised_beam_equals_exhaustive_search() -> None:
    decoder = tiny_decoder(seed=5)
    memory = memory_of(5, seed=15)[0]
    exact = {y: teacher_forced_log_prob(decoder, memory, y) / (len(y) + 1) for y in all_sequences(3)}
    hypotheses = beam_search(decoder, memory, beam=16, max_len=3, length_norm=True)
    best = max(exact, key=exact.__getitem__)
    assert hypotheses[0].tokens == best
    assert hypotheses[0].score == pytest.approx(exact[best], abs=1e-5)


def test_ctc_prefix_scores_equal_brute_force() -> None:
    # normalised in fp64: a prefix score takes the frames after the prefix to sum to 1, which fp32 rows do only
    # to about V·2^-24 each
    logits = 1.5 * torch.randn(5, VOCAB, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    log_probs = logits.log_softmax(-1)
    probs = ctc_sequence_probs(log_probs)
    scorer = CTCPrefixScorer(log_probs, eos=EOS)
    states = {(): scorer.initial()}
    for y in all_sequences(3)[1:]:  # shorter prefixes come first, so each parent's state is ready
        [score], [states[y]] = scorer.extend([states[y[:-1]]], [y[-1]])
        prefix_mass = math.fsum(p for seq, p in probs.items() if seq[: len(y)] == y)
        assert score == pytest.approx(math.log(prefix_mass), abs=1e-10)
        assert states[y].score == score
    # eos: the full-sequence probability, for several prefixes at once
    chosen = [(), (1,), (2, 1), (1, 1, 2)]
    full, _ = scorer.extend([states[y] for y in chosen], [EOS] * len(chosen))
    for y, value in zip(chosen, full):
        assert value == pytest.approx(math.log(probs[y]), abs=1e-10)


@pytest.mark.parametrize(("seed", "weight"), [(0, 0.3), (1, 0.5), (2, 0.8)])
def test_joint_beam_scores_and_best_equal_exhaustive_search(seed: int, weight: float) -> None:
    decoder = tiny_decoder(seed=seed)
    memory = memory_of(5, seed=20 + seed)[0]
    ctc = (1.5 * torch.randn(4, VOCAB, generator=torch.Generator().manual_seed(30 + seed))).log_softmax(-1)
    probs = ctc_sequence_probs(ctc)
    attention = {y: teacher_forced_log_prob(decoder, memory, y) for y in all_sequences(3)}
    joint = {y: weight * math.log(probs[y]) + (1 - weight) * att for y, att in attention.items() if probs.get(y, 0) > 0}
    hypotheses = beam_search(decoder, memory, beam=16, max_len=3, ctc_log_probs=ctc, ctc_weight=weight)
    best = max(joint, key=joint.__getitem__)
    assert hypotheses[0].tokens == best
    for h in hypotheses:  # score = λ·log p_ctc(y) (brute force) + (1 − λ)·log p_att(y)
        assert h.ctc == pytest.approx(math.log(probs[h.tokens]), abs=1e-10)
        assert h.attention == pytest.approx(attention[h.tokens], abs=1e-5)
        assert h.score == pytest.approx(joint[h.tokens], abs=1e-5)
    # scoring every token by CTC or only the attention's top 3 (all of them here) is the same search
    pruned = beam_search(decoder, memory, beam=16, max_len=3, ctc_log_probs=ctc, ctc_weight=weight, pre_beam=3)
    assert [(h.tokens, h.score) for h in pruned] == [(h.tokens, h.score) for h in hypotheses]


def test_ctc_head_without_an_end_unit() -> None:
    decoder = tiny_decoder(seed=4)
    memory = memory_of(5, seed=40)[0]
    narrow = torch.randn(4, VOCAB - 1, generator=torch.Generator().manual_seed(41)).log_softmax(-1)  # blank + labels
    wide = torch.cat([narrow, torch.full((4, 1), float("-inf"))], dim=1)
    a = beam_search(decoder, memory, beam=16, max_len=3, ctc_log_probs=narrow, ctc_weight=0.4)
    b = beam_search(decoder, memory, beam=16, max_len=3, ctc_log_probs=wide, ctc_weight=0.4)
    assert [(h.tokens, h.score) for h in a] == [(h.tokens, h.score) for h in b] and len(a) > 1


def test_ctc_weight_one_is_ctc_decoding() -> None:
    decoder = tiny_decoder(seed=3)
    memory = memory_of(5, seed=33)[0]
    ctc = (2.0 * torch.randn(4, VOCAB, generator=torch.Generator().manual_seed(34))).log_softmax(-1)
    probs = {y: p for y, p in ctc_sequence_probs(ctc).items() if all(c in LABELS for c in y) and len(y) <= 3}
    [best] = beam_search(decoder, memory, beam=16, max_len=3, ctc_log_probs=ctc, ctc_weight=1.0)[:1]
    assert best.tokens == max(probs, key=probs.__getitem__)
    assert best.score == pytest.approx(math.log(max(probs.values())), abs=1e-10)


def test_search_bad_input_names_the_problem() -> None:
    decoder = tiny_decoder()
    with pytest.raises(ValueError, match=r"\(T, M\) memory"):
        beam_search(decoder, torch.zeros(1, 5, MEMORY_DIM), beam=2, max_len=3)
    with pytest.raises(ValueError, match="needs ctc_log_probs"):
        beam_search(decoder, torch.zeros(5, MEMORY_DIM), beam=2, max_len=3, ctc_weight=0.3)
    with pytest.raises(ValueError, match="vocabulary of 4"):
        beam_search(
            decoder, torch.zeros(5, MEMORY_DIM), beam=2, max_len=3, ctc_log_probs=torch.zeros(5, 2), ctc_weight=0.3
        )
    with pytest.raises(ValueError, match=r"memory lengths of shape \(3,\)"):
        greedy_search(decoder, torch.zeros(2, 5, MEMORY_DIM), torch.tensor([1, 2, 3]), max_len=3)


def test_separate_start_and_end_symbols_as_in_the_transformers_vocabulary() -> None:
    # <pad>/blank 0, <s> 1, </s> 2, then labels 3 and 4 (Wav2Vec2CTCTokenizer's order): <s> is never emitted
    torch.manual_seed(7)
    config = Seq2SeqConfig(
        vocab_size=5, memory_dim=MEMORY_DIM, dim=8, layers=2, heads=2, ffn=16, dropout=0.0, sos_id=1, eos_id=2
    )
    decoder = Seq2SeqDecoder(config).eval()
    with torch.no_grad():
        decoder.out.weight.mul_(4.0)
        decoder.out.bias[1] = 5.0  # the start symbol would win everywhere if it were allowed
    memory = memory_of(5, seed=50)[0]
    targets = decoder_targets(torch.tensor([[3, 4]]), torch.tensor([2]), sos=1, eos=2)
    assert targets.inputs.tolist() == [[1, 3, 4]] and targets.outputs.tolist() == [[3, 4, 2]]

    def score(y: tuple[int, ...]) -> float:
        with torch.no_grad():
            log_probs = decoder(torch.tensor([[1, *y]]), memory[None]).double().log_softmax(-1)[0]
        return math.fsum(log_probs[u, c].item() for u, c in enumerate((*y, 2)))

    exact = {y: score(y) for n in range(3) for y in itertools.product((3, 4), repeat=n)}
    hypotheses = beam_search(decoder, memory, beam=16, max_len=2)
    best = max(exact, key=exact.__getitem__)
    assert hypotheses[0].tokens == best and hypotheses[0].score == pytest.approx(exact[best], abs=1e-5)
    assert all(1 not in h.tokens and 0 not in h.tokens for h in hypotheses)
    assert 1 not in greedy_search(decoder, memory[None], max_len=4)[0]

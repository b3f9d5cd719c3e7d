"""Build the synthetic espeak-ng demo corpus (see ssl_audio/demo/corpus.py for the layout).

python tools/make_demo_corpus.py --out data/demo             # ~1 h unlabeled + labelled sets
python tools/make_demo_corpus.py --out /tmp/tiny --tiny      # a few dozen files, for tests
python tools/make_demo_corpus.py --out data/demo --noisy-only  # add keywords_test_noisy.tsv to an existing corpus
python tools/make_demo_corpus.py --out data/demo --events-only # add the audio events set (seconds; events.py)
python tools/make_demo_corpus.py --out data/demo --events      # a full build with the events set
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from ssl_audio.demo.corpus import CorpusConfig, add_noisy_keywords, build_corpus, tiny_config
from ssl_audio.demo.events import DEFAULT_EVENTS, TINY_EVENTS, add_events


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--tiny", action="store_true", help="a few dozen short files (for tests)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--hours", type=float, default=None, help="target hours of unlabeled audio")
    parser.add_argument("--overwrite", action="store_true", help="replace a corpus already in --out")
    parser.add_argument(
        "--noisy-only", action="store_true", help="only (re)write keywords_test_noisy.tsv of the corpus in --out"
    )
    parser.add_argument("--events", action="store_true", help="also build the audio events set")
    parser.add_argument(
        "--events-only", action="store_true", help="only (re)write the audio events set of the corpus in --out"
    )
    args = parser.parse_args(argv)
    if args.noisy_only:
        add_noisy(parser, Path(args.out))
        return
    if args.events_only:
        events(parser, Path(args.out), args.tiny)
        return

    config = tiny_config(args.seed) if args.tiny else CorpusConfig(seed=args.seed)
    start = time.perf_counter()
    try:  # bad sizes and an occupied --out are usage errors
        if args.hours is not None:
            config = dataclasses.replace(config, unlabeled_hours=args.hours)
        summary = build_corpus(args.out, config, workers=args.workers, overwrite=args.overwrite)
    except ValueError as err:
        parser.error(str(err))
    elapsed = time.perf_counter() - start
    files = ", ".join(f"{name} {count}" for name, count in summary.files.items())
    minutes = ", ".join(f"{part} {s / 60:.1f} min" for part, s in summary.seconds.items())
    print(f"wrote {args.out}: {sum(summary.files.values())} files ({files})")
    print(f"audio {summary.hours:.2f} h ({minutes}); speakers {summary.speakers}; {len(summary.phones)} phone labels")
    print(f"built in {elapsed:.1f} s with {args.workers} workers")
    if args.events:
        events(parser, Path(args.out), args.tiny)


def add_noisy(parser: argparse.ArgumentParser, out: Path) -> None:
    """The noisy keyword test set of an existing corpus, seeded by its corpus.json (as a full build would)."""
    info = out / "corpus.json"
    if not info.is_file():
        parser.error(f"{info}: not found; --noisy-only needs a corpus built by this tool")
    start = time.perf_counter()
    try:
        table = add_noisy_keywords(out, seed=int(json.loads(info.read_text())["seed"]))
    except ValueError as err:  # a missing audio file or a bad table: named in the message
        parser.error(str(err))
    rows = len(table.read_text(encoding="utf-8").splitlines()) - 1
    print(f"wrote {table} ({rows} noisy keyword files) in {time.perf_counter() - start:.1f} s")


def events(parser: argparse.ArgumentParser, out: Path, tiny: bool) -> None:
    """The audio events set of an existing corpus, seeded by its corpus.json."""
    info = out / "corpus.json"
    if not info.is_file():
        parser.error(f"{info}: not found; --events-only needs a corpus built by this tool")
    start = time.perf_counter()
    try:
        counts = add_events(
            out, seed=int(json.loads(info.read_text())["seed"]), config=TINY_EVENTS if tiny else DEFAULT_EVENTS
        )
    except ValueError as err:  # a missing keyword table or audio file: named in the message
        parser.error(str(err))
    tables = ", ".join(f"{name}.tsv {n}" for name, n in counts.items())
    print(f"wrote the events set under {out}: {tables} clips in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()

"""Condition tables for the probes' noise protocols (issue #17): clean rows plus noisy copies at exact SNRs.

    python tools/make_snr_tables.py data/demo/{keywords,sentences}_test.tsv --out data/demo/snr --seed 1
    python tools/make_snr_tables.py data/demo/{keywords,sentences}_train.tsv --out data/demo/snr --seed 2

Each TSV gives <out>/<stem>_snr.tsv (columns of the source, `snr_db` after `path`, `inf` on clean rows) and its
noisy audio under <out>/snr<s>/. Test tables are scored per bucket with `ssl-audio probe ... --by-snr`; training
tables are the multi-condition head training set (clean + every SNR); both feed the `noisy` probe. Use different
seeds for training and test tables.
"""

from __future__ import annotations

import argparse
import time

from ssl_audio.demo.snr_tables import CONDITION_SNRS, make_condition_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tables", nargs="+", metavar="TSV", help="clean labelled tables (path + label columns)")
    parser.add_argument("--out", required=True, help="folder of the condition tables and their noisy audio")
    parser.add_argument(
        "--snrs", default=",".join(f"{s:g}" for s in CONDITION_SNRS), help="comma-separated dB (default %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=0, help="noise seed (use another for training than for test)")
    parser.add_argument("--no-clean", action="store_true", help="leave the clean rows out")
    args = parser.parse_args(argv)
    try:
        snrs = tuple(float(s) for s in args.snrs.split(","))
    except ValueError:
        parser.error(f"--snrs: expected comma-separated numbers of dB, got {args.snrs!r}")
    for tsv in args.tables:
        start = time.perf_counter()
        out = make_condition_table(tsv, args.out, snrs, args.seed, clean=not args.no_clean)
        print(f"wrote {out} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m reports STUDY_DIR [STUDY_DIR ...] [--out DIR] [--format png,pdf,svg] [--tune lr]``.

Exit codes: 0 when the report is written (its files are printed on stdout); 2 on bad input,
with one line on stderr and nothing written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from ._config import DEFAULT_BOOTSTRAP, FIGURES, NOT_REQUESTED, check_figures, check_formats
from ._errors import ReportError
from ._paths import as_study_dir, find_results, is_local, local_out

DESCRIPTION = """\
Write figures, fits.csv and summary.md for one or several ilstudy studies.
Reads STUDY_DIR/results/ (a running study is fine: unfinished trials are reported, not fitted).
STUDY_DIR is a folder or any pyarrow filesystem URI: file:///path, or
s3://bucket/studies/NAME?endpoint_override=HOST:PORT&scheme=http (MinIO, Ceph) with the
credentials in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
Default --out: STUDY_DIR/report/; with several studies, which are compared (the `study` column
tells them apart), FIRST_STUDY_DIR/report/compare_<other study folder names>/. When the
(first) study is on a remote store, ./report-<study name>/ in the working directory instead."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2 (argparse prints usage too)
        self.exit(2, f"python -m reports: {message}\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog="python -m reports", description=DESCRIPTION,
                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("study_dirs", nargs="+", metavar="STUDY_DIR",
                        help="study folder holding results/ (or the results/ folder itself)")  # fmt: skip
    parser.add_argument("--out", metavar="DIR", help="output folder (see above)")
    parser.add_argument("--format", default="png", metavar="FMTS",
                        help="comma-separated figure formats among png, pdf, svg (default: png)")  # fmt: skip
    parser.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, metavar="N",
                        help=f"bootstrap replicates per fit (default: {DEFAULT_BOOTSTRAP}; 0: no CIs)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="bootstrap random seed (default: 0)")
    parser.add_argument("--tune", default="lr", metavar="KEYS",
                        help="comma-separated keys selected per K on validation accuracy for the "
                             "tuned view (default: lr; 'none': no tuned view)")  # fmt: skip
    parser.add_argument("--match-train-loss", type=float, default=None, metavar="LOSS",
                        help="target train loss of the matched view (default: each group's "
                             "worst final train loss)")  # fmt: skip
    parser.add_argument("--figures", default=None, metavar="NAMES",
                        help="comma-separated figures to draw (default: all; none: tables only): "
                             + ", ".join(FIGURES))  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    tune = tuple(k.strip() for k in args.tune.split(",") if k.strip() and k.strip() != "none")
    try:  # cheap checks first, before pandas, scipy and matplotlib load
        formats = check_formats(args.format.split(","))
        figures = None if args.figures is None else check_figures(args.figures.split(","))
        if args.match_train_loss is not None and not args.match_train_loss > 0:
            raise ReportError(f"--match-train-loss must be > 0, got {args.match_train_loss:g}")
        if args.out is not None:
            local_out(args.out)
        for path in args.study_dirs:
            find_results(as_study_dir(path))
        remote_default = args.out is None and not is_local(as_study_dir(args.study_dirs[0]))
    except ReportError as exc:
        print(f"python -m reports: {exc}", file=sys.stderr)
        return 2
    from ._report import stderr_progress, write_report

    try:
        result = write_report(
            args.study_dirs,
            out=args.out,
            formats=formats,
            n_boot=args.bootstrap,
            seed=args.seed,
            progress=None if args.quiet else stderr_progress,
            tune=tune,
            match_train_loss=args.match_train_loss,
            figures=figures,
        )
    except ReportError as exc:
        print(f"python -m reports: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"python -m reports: cannot write the report: {exc}", file=sys.stderr)
        return 2
    where = " (the study is on a remote store: default --out ./report-<study name>)"
    print(f"report written to {result.out}{where if remote_default else ''}")
    for path in result.files:
        print(f"  {path}")
    for name, reason in result.skipped.items():
        if reason != NOT_REQUESTED:
            print(f"  (no {name} figure: {reason})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``paralab run|bench|list|compare|report|probe``. Heavy imports stay inside the commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from paralab.errors import ParalabError, RunFailedError

LIST_KINDS = {
    "models": "model",
    "datasets": "data",
    "tasks": "task",
    "paradigms": "paradigm",
    "trainers": "trainer",
    "experiments": "experiment",
    "benchmarks": "benchmark",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paralab",
        description="Train vision models under different learning paradigms and compare them.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="run one experiment (see `paralab list experiments`)")
    run.add_argument(
        "experiment", nargs="?", help="experiment name (see `paralab list experiments`)"
    )
    run.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. model=vit")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run folder")
    run.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )

    bench = sub.add_parser("bench", help="run a benchmark suite and compare its runs")
    bench.add_argument("suite", nargs="?", help="suite name (see `paralab list benchmarks`)")
    bench.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    bench.add_argument("--output-dir", help="where the suite folder goes (default: runs/bench)")
    bench.add_argument("--only", metavar="RUN[,RUN]", help="run only these runs of the suite")
    bench.add_argument(
        "--parallel",
        type=_positive,
        metavar="N",
        help="run up to N runs at once, each its own process placed by Ray (default: one after "
        "another in this process)",
    )
    bench.add_argument(
        "--ray-address",
        metavar="HOST:PORT",
        help="place the runs on this Ray cluster (default: $RAY_ADDRESS, else a local Ray); "
        "implies --parallel",
    )
    bench.add_argument(
        "--resume", metavar="BENCH_DIR", help="finish an interrupted suite folder (skips done runs)"
    )

    lst = sub.add_parser("list", help="list what can be named in a config")
    lst.add_argument("kind", nargs="?", choices=sorted(LIST_KINDS), help="one kind (default: all)")

    cmp_ = sub.add_parser("compare", help="a comparison table over existing run folders")
    cmp_.add_argument("run_dirs", nargs="+", help="run folders (each holds summary.json)")
    cmp_.add_argument(
        "--metric", action="append", help="metric column(s), default the runs' headline"
    )

    report = sub.add_parser("report", help="an HTML report of a benchmark folder")
    report.add_argument("bench_dir", help="a folder written by `paralab bench`")

    probe = sub.add_parser(
        "probe", help="linear and k-NN probes of a run's backbone (writes probe.json there)"
    )
    probe.add_argument("target", nargs="?", help="a run folder (with --random: an experiment)")
    probe.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. probe.knn_k=10 data=fashion_mnist"
    )
    probe.add_argument(
        "--random",
        action="store_true",
        help="probe a freshly initialised model of the experiment TARGET (the untrained baseline)",
    )
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    if args.resume:
        if args.experiment or args.overrides:
            raise ParalabError(
                "--resume takes only the run folder: it continues with the config saved there"
            )
        from paralab.api import resume

        summary = resume(args.resume)
    else:
        if not args.experiment:
            raise ParalabError(
                "name an experiment: paralab run <experiment> (paralab list experiments)"
            )
        from paralab.api import compose

        config = compose(args.experiment, args.overrides)
        if args.print_config:
            import yaml

            print(yaml.safe_dump(config.plain, sort_keys=False), end="")
            return 0
        from paralab.platform.runner import execute

        summary = execute(config)
    from paralab.platform.tracking import is_global_zero

    if is_global_zero():
        metrics = "  ".join(
            f"{k}={_number(v)}"
            for k, v in summary["metrics"].items()
            if k.startswith("test/") and k.count("/") == 1  # per-class values: metrics.csv
        )
        print(f"{summary['name']}: {metrics}  ({summary['wall_time_s']:.1f} s)")
        print(summary["run_dir"])
    return 0


def _number(value: float | None) -> str:
    """A metric as a user reads it: counts whole, rates to 4 places (``null``: not a number)."""
    if value is None:
        return "nan"
    return str(int(value)) if float(value).is_integer() and abs(value) >= 1 else f"{value:.4f}"


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.resume:
        if args.suite or args.overrides or args.only or args.output_dir:
            raise ParalabError(
                "--resume takes only the suite folder: it continues with the suite, overrides "
                "and run selection saved there"
            )
        from paralab.api import resume_bench

        print(resume_bench(args.resume, parallel=args.parallel, ray_address=args.ray_address))
        return 0
    if not args.suite:
        raise ParalabError("name a suite: paralab bench <suite> (paralab list benchmarks)")
    from paralab.api import bench

    only = _only(args.suite, args.only)
    if args.output_dir:
        from paralab.platform.schema import output_dir_problem

        problem = output_dir_problem(args.output_dir, "--output-dir")
        if problem:
            raise ParalabError(f"--output-dir {args.output_dir}: {problem}")
    folder = bench(args.suite, args.overrides, output_dir=args.output_dir, only=only,
                   parallel=args.parallel, ray_address=args.ray_address)  # fmt: skip
    print(folder)
    return 0


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number of runs at once (1 or more)"
        )
    return int(text)


def _only(suite: str, only: str | None) -> list[str] | None:
    """``--only a,b`` as names; naming no run at all (``--only ,``) is an error, not "all"."""
    if only is None:
        return None
    names = [n.strip() for n in only.split(",") if n.strip()]
    if not names:
        from paralab.benchmarks.suite_file import load_suite

        runs = ",".join(r.name for r in load_suite(suite).runs)
        raise ParalabError(
            f"--only {only!r} names no run. Give run names separated by commas, e.g. "
            f"--only {runs.split(',')[0]} (this suite's runs: {runs}), or leave --only out for all"
        )
    return names


def _cmd_list(args: argparse.Namespace) -> int:
    from paralab.platform.config import config_dirs, config_file, group_options

    config_dirs()  # a wrong $PARALAB_CONFIG_DIR stops before any heading is printed
    kinds = [args.kind] if args.kind else list(LIST_KINDS)
    for kind in kinds:
        group = LIST_KINDS[kind]
        print(f"{kind}:")
        for name in group_options(group):
            print(f"  {name:<28} {_first_comment(config_file(group, name))}")
    return 0


def _first_comment(path: Path | None) -> str:
    """A config's first comment line: its description in ``paralab list``."""
    if path is None:
        return ""
    for line in path.read_text().splitlines():
        if line.startswith("#") and not line.startswith("# @package"):
            return line.lstrip("# ").strip()
        if line.strip() and not line.startswith("#"):
            break
    return ""


def _cmd_compare(args: argparse.Namespace) -> int:
    from paralab.benchmarks.compare import compare_runs

    print(compare_runs(args.run_dirs, args.metric), end="")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from paralab.benchmarks.report import write_report

    print(write_report(args.bench_dir))
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    if not args.target:
        raise ParalabError(
            "name a run folder: paralab probe <run folder> [key=value ...], or an experiment "
            "for the untrained baseline: paralab probe --random <experiment>"
        )
    if "=" in args.target and not Path(args.target).exists():
        raise ParalabError(
            f"{args.target!r} is an override, not a run folder: name the folder first, "
            "paralab probe <run folder> [key=value ...]"
        )
    from paralab.api import probe, probe_random

    if args.random:
        result = probe_random(args.target, args.overrides)
        label = f"{args.target} (random init, {result['dataset']})"
    else:
        result = probe(args.target, args.overrides)
        label = f"{Path(result['run_dir']).name} ({result['dataset']})"
    metrics = "  ".join(f"{k}={_number(v)}" for k, v in result["metrics"].items())
    print(f"{label}: {metrics}")
    if not args.random:
        print(Path(result["run_dir"]) / "probe.json")
    return 0


COMMANDS = {"run": _cmd_run, "bench": _cmd_bench, "list": _cmd_list,
            "compare": _cmd_compare, "report": _cmd_report, "probe": _cmd_probe}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a non-ASCII run name on an ASCII-only terminal
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    from paralab.platform.progress import show_on_stderr

    show_on_stderr()  # progress lines from the library, bare on stderr
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may follow options (`bench suite --output-dir d k=v`): argparse leaves them over
    overrides_only = all("=" in e and not e.startswith("-") for e in extra)
    if extra and hasattr(args, "overrides") and overrides_only:
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, not in Python's flush at exit
        return code
    except RunFailedError as error:
        print(f"paralab: run failed: {error}", file=sys.stderr)
        return 1
    except ParalabError as error:
        print(f"paralab: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("paralab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        if not _stdout_closed():
            raise
        _discard_stdout()
        return 141  # 128 + SIGPIPE, what `ls | head -1` leaves for ls


def _stdout_closed() -> bool:
    """Whether the reader of stdout went away (``paralab list | head -1``), as opposed to some
    other pipe breaking inside a run, which must still show its traceback."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLERR)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll() (Windows) or no real stdout
        return True


def _discard_stdout() -> None:
    """Point stdout at /dev/null: Python flushes it at exit and would report the pipe again."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())

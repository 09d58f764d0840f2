"""The ``edgeloom`` command: run, serve, crds, bench, models."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from edgeloom.api import podenv
from edgeloom.api.podenv import EXIT_INVALID, EXIT_JOB_FAILED, EXIT_STOPPED
from edgeloom.runtime.logs import LOG_FORMAT


def _cmd_run(args: argparse.Namespace) -> int:
    """Run a resource file locally; SIGTERM and SIGHUP stop it as Ctrl-C does, with every role
    and the embedded nats-server, and it exits 128 + the signal."""
    from edgeloom.api.resource import InvalidResource
    from edgeloom.local.procs import interrupt_on_stop_signals
    from edgeloom.local.runner import RunFailed, run_file

    with interrupt_on_stop_signals() as stopped_by:
        try:
            result = run_file(
                args.file,
                nats_url=args.nats,
                runs_dir=args.runs_dir,
                show_progress=not args.no_progress,
                in_process=args.in_process,
            )
        except InvalidResource as err:
            print(f"error: {args.file} is not a valid resource:\n{err}", file=sys.stderr)
            return EXIT_INVALID
        except RunFailed as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            how = signal.Signals(stopped_by[0]).name if stopped_by else "interrupted"
            print(f"{how}: every role was stopped", file=sys.stderr)
            return 128 + (stopped_by[0] if stopped_by else signal.SIGINT)
    return 0 if result.succeeded else 1


def _default_index() -> int:
    if podenv.INDEX in os.environ:
        return int(os.environ[podenv.INDEX])
    offset = int(os.environ.get(podenv.INDEX_OFFSET, "0"))
    return offset + int(os.environ.get(podenv.JOB_COMPLETION_INDEX, "0"))


def _cmd_serve(args: argparse.Namespace) -> int:
    from edgeloom.api.resource import InvalidResource
    from edgeloom.runtime.metrics import MetricsEndpoint
    from edgeloom.runtime.reporter import JobFailed
    from edgeloom.runtime.role import serve

    role = serve(
        args.resource,
        args.role,
        args.index,
        args.nats,
        endpoint=None
        if args.metrics_port is None
        else MetricsEndpoint(args.metrics_port, args.metrics_addr, args.metrics_linger),
        run_dir=args.run_dir,
    )
    try:
        finished = asyncio.run(role)
    except InvalidResource as err:
        print(f"error: {args.resource} is not a valid resource:\n{err}", file=sys.stderr)
        return EXIT_INVALID
    except JobFailed as err:  # reported Failed already; no retry can change the verdict
        print(f"error: the job failed: {err}", file=sys.stderr)
        return EXIT_JOB_FAILED
    # stopped before its work was done (an evicted or deleted pod): not a success, so a Job
    # replaces the pod instead of counting its index as completed
    return 0 if finished else EXIT_STOPPED


def _cmd_crds(args: argparse.Namespace) -> int:
    from edgeloom.api.argocd import check_argocd_health, write_argocd_health
    from edgeloom.api.crdgen import CRD_DIRS, check_crds, write_crds

    dirs = [args.root / d for d in CRD_DIRS]
    if args.check:
        problems = check_crds(dirs) + check_argocd_health(args.root)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("CRDs are out of date: run `edgeloom crds`", file=sys.stderr)
            return 1
        print("CRDs up to date")
        return 0
    for path in [*write_crds(dirs), write_argocd_health(args.root)]:
        print(f"wrote {path}")
    return 0


def _cmd_dashboards(args: argparse.Namespace) -> int:
    from edgeloom_operators.dashboards.generate import check_dashboards, write_dashboards
    from edgeloom_operators.kinds import default_plugins

    if args.check:
        problems = check_dashboards(args.root, default_plugins())
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            return 1
        print("dashboards up to date")
        return 0
    for path in write_dashboards(args.root, default_plugins()):
        print(f"wrote {path}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from edgeloom.bench import UnknownBenchmark, UnknownSelection, get_benchmark, run_benchmark

    try:
        bench = get_benchmark(args.name)(quick=args.quick)
        _, files = run_benchmark(bench, args.out, cases=args.case, methods=args.method)
    except (UnknownBenchmark, UnknownSelection) as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return EXIT_INVALID
    print(f"wrote {files.json} and {files.png}")
    return 0


class _BenchHelp(argparse.Action):
    """``edgeloom bench -h``: the help and every registered benchmark, looked up only then."""

    def __init__(self, option_strings: list[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        from edgeloom.bench import describe_benchmarks

        parser.epilog = "benchmarks:\n" + describe_benchmarks()
        parser.print_help()
        parser.exit()


def _cmd_models(args: argparse.Namespace) -> int:
    from edgeloom.api.artifacts import BuiltinModel

    if args.model == BuiltinModel.TINY_LLAMA:
        from edgeloom.models.tiny_llama import build_tiny_llama

        print(build_tiny_llama(args.preset))
        return 0
    from edgeloom.models.builtins import builtin_model_folder

    print(builtin_model_folder(BuiltinModel(args.model)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgeloom", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a resource file locally (embedded NATS, local roles)")
    run.add_argument("file", type=Path, help="resource YAML, as for kubectl apply")
    run.add_argument("--nats", help="use this NATS server instead of starting one")
    run.add_argument(
        "--runs-dir",
        type=Path,
        default=Path("runs"),
        help="results go to RUNS_DIR/<name>/ (default: runs)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--in-process",
        action="store_true",
        help="run every role in this process instead of one process per role",
    )
    run.set_defaults(func=_cmd_run)

    serve = sub.add_parser("serve", help="run one role of a resource (pod entrypoint)")
    serve.add_argument(
        "--resource",
        type=Path,
        default=os.environ.get(podenv.RESOURCE),
        required=podenv.RESOURCE not in os.environ,
        help="resource file",
    )
    serve.add_argument(
        "--role",
        default=os.environ.get(podenv.ROLE),
        required=podenv.ROLE not in os.environ,
    )
    serve.add_argument(
        "--index",
        type=int,
        default=_default_index(),
        help=f"replica index; default {podenv.INDEX}, or {podenv.JOB_COMPLETION_INDEX} (an "
        f"Indexed Job) plus {podenv.INDEX_OFFSET} (where that Job's replicas start)",
    )
    serve.add_argument("--nats", default=os.environ.get(podenv.NATS_URL, "nats://127.0.0.1:4222"))
    serve.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ[podenv.METRICS_PORT]) if podenv.METRICS_PORT in os.environ else None,
        help=f"serve /metrics on this port; default {podenv.METRICS_PORT}, else no endpoint",
    )
    serve.add_argument(
        "--metrics-addr",
        default=os.environ.get(podenv.METRICS_ADDR) or "0.0.0.0",
        help=f"address /metrics listens on; default {podenv.METRICS_ADDR} (in a pod: its IP)",
    )
    serve.add_argument(
        "--metrics-linger",
        type=float,
        default=float(os.environ.get(podenv.METRICS_LINGER_SECONDS) or 0),
        help="seconds /metrics stays up after the work is done, so the last values are "
        f"scraped; default {podenv.METRICS_LINGER_SECONDS}, else 0",
    )
    serve.add_argument(
        "--run-dir",
        type=Path,
        default=Path(os.environ[podenv.WORK_DIR]) if os.environ.get(podenv.WORK_DIR) else None,
        help="writable folder for the role's own files (default outputs, final metrics); "
        f"default {podenv.WORK_DIR}, else none",
    )
    serve.set_defaults(func=_cmd_serve)

    crds = sub.add_parser(
        "crds", help="generate CRDs and Argo CD health checks from the API models"
    )
    crds.add_argument("--check", action="store_true", help="fail if committed CRDs differ")
    crds.add_argument("--root", type=Path, default=Path("."), help="repository root")
    crds.set_defaults(func=_cmd_crds)

    boards = sub.add_parser("dashboards", help="generate the chart's Grafana dashboards")
    boards.add_argument("--check", action="store_true", help="fail if committed ones differ")
    boards.add_argument("--root", type=Path, default=Path("."), help="repository root")
    boards.set_defaults(func=_cmd_dashboards)

    bench = sub.add_parser(
        "bench",
        help="run a benchmark; JSON + PNG under bench/results/",
        description="Run a benchmark (a system against its baselines on the same data, seed\n"
        "and device profiles) and write OUT/NAME.json and OUT/NAME.png.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
    )
    bench.add_argument("-h", "--help", action=_BenchHelp, help="show this help and the benchmarks")
    bench.add_argument("name", help="benchmark (see the list below)")
    bench.add_argument("--quick", action="store_true", help="small smoke-sized run")
    bench.add_argument(
        "--case", action="append", help="run only this case (repeatable); default all"
    )
    bench.add_argument(
        "--method", action="append", help="run only this method (repeatable); default all"
    )
    bench.add_argument("--out", type=Path, default=Path("bench/results"))
    bench.set_defaults(func=_cmd_bench)

    models = sub.add_parser(
        "models",
        help="build (tiny-llama trained, smollm2-135m converted, offline, cached) or locate a "
        "built-in model",
    )
    models.add_argument("model", choices=["tiny-llama", "minilm", "smollm2-135m"])
    models.add_argument("--preset", choices=["quick", "standard"], default="standard")
    models.set_defaults(func=_cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet = args.command == "run"  # the progress bar and summary say enough; roles log to files
    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format=LOG_FORMAT)
    if quiet and not args.verbose:  # the console shows warnings; in-process role logs get all
        for handler in logging.getLogger().handlers:
            handler.setLevel(logging.WARNING)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

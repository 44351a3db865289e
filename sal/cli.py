"""``sal`` / ``python -m sal``: the only place that prints or reads argv.

Bad input (unknown key, impossible value, missing file) exits 2 before any compute and writes nothing.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from collections.abc import Callable

from .config import SpecError

__all__ = ["main"]

EXIT_BAD_INPUT = 2
_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    def register(fn):
        _COMMANDS[name] = fn
        return fn
    return register


def _uri(args: argparse.Namespace) -> str:
    from .tracking import default_tracking_uri

    return args.tracking_uri or default_tracking_uri()


@command("train")
def _train(args: argparse.Namespace) -> int:
    from .config import load_run_spec, parse_overrides
    from .tracking import experiment_name, log_result
    from .train import train

    spec = load_run_spec(args.config, parse_overrides(args.set))
    uri = _uri(args)
    print(f"training {spec.method.name} on {spec.data.name} ({spec.model.name}, {spec.optim.name}), seed {spec.seed}, "
          f"{spec.train.epochs} epochs")
    result = train(spec)
    run_id = log_result(result, uri=uri, experiment=args.experiment or experiment_name("train"), kind="train")
    final = ", ".join(f"{k}={v:.4g}" for k, v in result.final.items())
    print(f"status {result.status}{': ' + result.message if result.message else ''}")
    print(f"{final}\nMLflow run {run_id} in {uri}")
    return 0


@command("ui")
def _ui(args: argparse.Namespace) -> int:
    uri = _uri(args)
    if uri.startswith("sqlite:///"):
        from .tracking import client_for

        client_for(uri).search_experiments()  # creates the store (and its tables) if this is a first start
    print(f"MLflow UI on http://127.0.0.1:{args.port} (store {uri}); Ctrl-C stops it", flush=True)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
           "--port", str(args.port)]
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sal", description="Sweeps, ablations and significance reports for "
                                "Stress-Aware Learning")
    p.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow/mlflow.db)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress of every run")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one run and log it to MLflow")
    t.add_argument("--config", help="YAML run spec (defaults apply to what it leaves out)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a dotted key, e.g. method.rho=1e-3")
    t.add_argument("--experiment", help="MLflow experiment (default sal-train)")

    u = sub.add_parser("ui", help="start the MLflow UI on 127.0.0.1 for the tracking store")
    u.add_argument("--port", type=int, default=5000)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    try:
        return _COMMANDS[args.command](args)
    except SpecError as err:
        print("error: invalid input\n" + "\n".join(f"  {line}" for line in err.problems), file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted; finished runs are kept, re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

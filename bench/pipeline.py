"""Throughput of two stages, ONNX scoring then a threshold route: Tandem, Quix Streams, a relay.

    uv run python bench/pipeline.py [--tasks 20000] [--batch 500] [--only tandem,quix,relay]
                                    [--repeats 5]

One run starts its own Kafka broker (free ports, a temporary folder) and measures, one after
the other so they never share the CPU, the same two hops (submitted → scored → an output) done
three ways, one process per stage each: Tandem's scoring and router services; a Quix Streams 3.x
pipeline (bench/quix/stages.py, run from an environment of its own with ``uv run --project
bench/quix``) that scores each record with the same ONNX model and routes it on a confidence
threshold; and two of the harness's transactional librdkafka relays chained. Each runs on fresh
topics pre-loaded with the same tasks, with 500 of them then with all, in ``--repeats`` rounds
of the three: a run's time goes from the start of its processes to the log-append time of its
last task's first output record, and the short runs' median time and CPU are taken off the full
runs', so start-up, group joins and the output's last buffering cancel out. Then the added
latency of each, fed at half Tandem's rate (or ``--latency-rate``, which runs this phase alone)
on fresh topics: a paced task's first output's log-append time less its submitted event's.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path

from harness import (
    Latency,
    Pipeline,
    Raw,
    Running,
    Stack,
    add_common_args,
    add_latency_args,
    as_submitted,
    cpu_seconds,
    draw_tasks,
    machine_busy_seconds,
    make_topics,
    paced_records,
    produce,
    read_stamps,
    run_bench,
    stop_relay,
    submitted_records,
    tasks_on,
    verdict,
    wait_for,
)
from rich.console import Console
from rich.table import Table
from tandem_cli.dataset import TASK_TYPE
from tandem_scoring.registry import MANIFEST, MODEL, ModelRegistry
from tandem_scoring.settings import ScoringSettings
from tandem_shared.events import TaskSubmitted
from tandem_shared.topics import Topics

SHORT = 500  # tasks of the run whose time and CPU are taken off the full run's
THRESHOLD = 0.9  # Quix's route: a confidence at least this is decided automatically
RELAY_AIM = 0.60  # Tandem's rate over the librdkafka relay's
QUIX_AIM = 1.5  # Tandem's rate over Quix's
LATENCY_AIM_MS = 20.0  # Tandem's p99 added latency over the relay's, at half Tandem's rate
QUIX = Path(__file__).resolve().parent / "quix"  # the Quix project: its own pyproject and lock
STAGES = QUIX / "stages.py"
INSTALL_S = 900.0  # the first run installs the Quix environment from PyPI
SETTLE_S = 1.0  # between loading a run's tasks and starting it: the broker writes them out

PIPELINES = {
    "tandem": "Tandem: scoring + router services",
    "quix": "Quix Streams 3.x, per-record inference",
    "relay": "librdkafka relay ×2, transactional",
}


def stamped(topics: Topics) -> tuple[str, ...]:
    return (topics.submitted, topics.scored, topics.routed, topics.decisions)


def outputs(topics: Topics) -> tuple[str, str]:
    """Where a task ends: an automatic decision, or a request for review (a relay's two hops
    write only the second)."""
    return (topics.decisions, topics.routed)


def quix_run(uv: str, *argv: str) -> list[str]:
    """``argv`` run by uv in the Quix project's environment."""
    return [uv, "run", "--project", str(QUIX), "--frozen", "python", *argv]


def quix_environment(console: Console) -> str:
    """Have bench/quix/.venv made from its lock before any run is timed (the first time, uv
    installs it from PyPI, which must not count as a stage's start-up) and check the stages
    start; the path of the uv binary itself, which uv gives the processes it runs (``UV``): a
    shim in front of it (pyenv's) would add 0.1 to 0.3 s, unevenly, to each stage's start."""
    found = shutil.which("uv")
    if found is None:
        raise SystemExit("bench/pipeline.py needs uv on the PATH to run the Quix stages")
    console.print(f"Quix Streams environment: uv run --project {QUIX} --frozen (made if missing)")

    def output(argv: list[str]) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_S, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the Quix stages do not start:\n{done.stdout}{done.stderr}")
        return done.stdout

    binary = output(quix_run(found, "-c", "import os; print(os.environ['UV'])")).strip()
    output(quix_run(binary, str(STAGES), "--help"))
    return binary


def model_files() -> tuple[Path, Path]:
    """The manifest and ONNX file of the model the scoring service serves the tasks with."""
    settings = ScoringSettings()
    registry = ModelRegistry.load(settings.models_dir, settings.serve, settings.inference_threads)
    model = registry.get(TASK_TYPE)
    if model is None:
        raise RuntimeError(f"no model serves {TASK_TYPE}")
    folder = settings.models_dir / model.manifest.name / model.manifest.version
    return folder / MANIFEST, folder / MODEL


@dataclass
class Stage:
    """One process of a pipeline."""

    pid: int
    alive: Callable[[], bool]
    stop: Callable[[], None]
    cpu: Callable[[], float]  # seconds it has used so far
    # Kept while the process runs: a relay's ready event, which the child opens after its start.
    keeps: object = None


@dataclass(frozen=True)
class Run:
    tasks: int
    seconds: float  # from the start of its processes to its last task's first output
    first: float  # from the start of its processes to its first output
    cpu: tuple[float, ...]  # CPU seconds of each stage's process, when the last task was out
    automatic: int  # tasks with an automatic decision
    # From the start of its processes to when the bench saw the last task out: the seconds,
    # and the machine's busy seconds over them (the broker's and anyone else's included).
    waited: float
    busy: float


def typical(runs: Sequence[Run]) -> Run:
    """Runs of one size as one: the median of each figure."""
    return Run(
        runs[0].tasks,
        statistics.median(r.seconds for r in runs),
        statistics.median(r.first for r in runs),
        tuple(statistics.median(stage) for stage in zip(*(r.cpu for r in runs), strict=True)),
        round(statistics.median(r.automatic for r in runs)),
        statistics.median(r.waited for r in runs),
        statistics.median(r.busy for r in runs),
    )


@dataclass(frozen=True)
class Figures:
    """A pipeline's short and full runs: what the tasks between them cost."""

    shorts: Sequence[Run]
    fulls: Sequence[Run]

    @property
    def short(self) -> Run:
        return typical(self.shorts)

    @property
    def full(self) -> Run:
        return typical(self.fulls)

    @property
    def tasks(self) -> int:
        return self.full.tasks - self.short.tasks

    @property
    def tasks_per_s(self) -> float:
        seconds = self.full.seconds - self.short.seconds
        return self.tasks / seconds if seconds > 0 else math.nan

    @property
    def first_to_last(self) -> float:
        """Tasks/s of the full runs from their first output to their last (the median): a
        check on ``tasks_per_s`` that holds neither start-up nor the wait for a first output."""
        return statistics.median(
            (r.tasks - 1) / (r.seconds - r.first) if r.seconds > r.first else math.nan
            for r in self.fulls
        )

    @property
    def cores_busy(self) -> float:
        """The whole machine's CPU, in cores, over the time the full runs took longer."""
        waited = self.full.waited - self.short.waited
        return (self.full.busy - self.short.busy) / waited if waited > 0 else math.nan

    @property
    def cpu_us(self) -> list[float]:
        """CPU µs a task in each stage's process."""
        return [
            (full - short) / self.tasks * 1e6
            for full, short in zip(self.full.cpu, self.short.cpu, strict=True)
        ]


@dataclass
class Bench:
    args: argparse.Namespace
    stack: Stack
    tasks: list[TaskSubmitted]
    uv: str = "uv"  # the binary that starts the Quix stages (quix_environment)

    @cached_property
    def backlog(self) -> list[Raw]:
        """The tasks as the records producers send (CloudEvents headers), encoded once."""
        return as_submitted(self.tasks)

    @cached_property
    def model(self) -> tuple[Path, Path]:
        return model_files()

    @property
    def bootstrap(self) -> str:
        return self.stack.bootstrap

    def start_tandem(self, topics: Topics) -> list[Stage]:
        """The scoring and router services as bench/scoring.py and bench/router.py run them,
        each in a group of its own, on the router's default policy."""
        run = uuid.uuid4().hex[:8]
        env = {
            "TANDEM_SCORING_BATCH_MAX_RECORDS": str(self.args.batch),
            "TANDEM_SCORING_GROUP_ID": f"bench-scoring-{run}",
            "TANDEM_ROUTER_BATCH_MAX_RECORDS": str(self.args.batch),
            "TANDEM_ROUTER_GROUP_ID": f"bench-router-{run}",
        }
        names = ("scoring", "router")
        services = self.stack.start_services(names, topics.prefix, env, topics.prefix)
        stages = []
        for name in names:
            process = services.get(name).process
            stages.append(
                Stage(
                    process.pid,
                    process.alive,
                    partial(services.stop, only=(name,)),
                    partial(cpu_seconds, process.pid),
                )
            )
        return stages

    def start_quix(self, topics: Topics) -> list[Stage]:
        """The two Quix stages, each started by ``uv run``: its CPU is that of the uv process
        and of the Python process it runs (the stage), which uv passes SIGTERM on to."""
        run = uuid.uuid4().hex[:8]
        manifest, model = self.model
        common = ["--broker", self.bootstrap, "--state-dir", str(self.stack.home / "quix")]
        argvs = {
            "score": quix_run(
                self.uv,
                str(STAGES),
                "score",
                *common,
                *("--group", f"bench-quix-score-{run}", "--source", topics.submitted),
                *("--target", topics.scored, "--manifest", str(manifest), "--model", str(model)),
            ),
            "route": quix_run(
                self.uv,
                str(STAGES),
                "route",
                *common,
                *("--group", f"bench-quix-route-{run}", "--source", topics.scored),
                *("--automatic", topics.decisions, "--review", topics.routed),
                *("--threshold", str(THRESHOLD)),
            ),
        }
        stages = []
        for stage, argv in argvs.items():
            process = self.stack.start_process(f"{topics.prefix}quix-{stage}", argv)
            stages.append(
                Stage(
                    process.pid,
                    process.alive,
                    process.stop,
                    partial(cpu_seconds, process.pid, children=True),
                )
            )
        return stages

    def start_relay(self, topics: Topics) -> list[Stage]:
        """Two transactional librdkafka relays (the harness's): submitted → scored → routed."""
        stages = []
        for source, target in ((topics.submitted, topics.scored), (topics.scored, topics.routed)):
            proc, ready = self.stack.start_relay(source, target, self.args.batch, "librdkafka")
            pid = proc.pid or 0
            stop = partial(stop_relay, proc)
            stages.append(Stage(pid, proc.is_alive, stop, partial(cpu_seconds, pid), ready))
        return stages

    def starter(self, pipeline: str) -> Callable[[Topics], list[Stage]]:
        return {
            "tandem": self.start_tandem,
            "quix": self.start_quix,
            "relay": self.start_relay,
        }[pipeline]

    async def latency(self, pipeline: str, per_second: float, records: Sequence[Raw]) -> Latency:
        """The pipeline's added latency, from a task's submitted event to its first output, on
        topics of its own fed ``records`` at ``per_second`` (see ``Stack.latency``)."""
        what = f"{pipeline}-latency"
        topics = await make_topics(self.bootstrap, self.stack.prefix(what), stamped)
        start = self.starter(pipeline)

        async def started() -> Running:
            stages = start(topics)

            def stop() -> None:
                for stage in stages:
                    stage.stop()

            return Running(lambda: all(stage.alive() for stage in stages), stop)

        tested = Pipeline(topics.submitted, outputs(topics), started)
        return await self.stack.latency(
            what, tested, records, per_second, self.args.latency_seconds
        )

    async def run(self, pipeline: str, count: int, what: str = "") -> Run:
        """One run of the pipeline on ``count`` tasks pre-loaded on fresh topics."""
        what = what or f"{pipeline}-{count}"
        topics = await make_topics(self.bootstrap, self.stack.prefix(what), stamped)
        tasks = self.backlog[:count]
        await produce(self.bootstrap, topics.submitted, tasks, self.stack.progress)
        await asyncio.sleep(SETTLE_S)
        start = self.starter(pipeline)
        began_ms, began, busy = (
            time.time_ns() // 1_000_000,
            time.monotonic(),
            machine_busy_seconds(),
        )
        stages = start(topics)
        bar = self.stack.progress.add_task(f"{pipeline}, {count} tasks", total=count)

        def alive() -> bool:
            return all(stage.alive() for stage in stages)

        async with tasks_on(self.bootstrap, *outputs(topics)) as count_tasks:
            written = f"{pipeline}: {', '.join(outputs(topics))}"
            await wait_for(count_tasks, count, written, self.stack.progress, bar, alive)
        cpu = tuple(stage.cpu() for stage in stages)
        waited, busy = time.monotonic() - began, machine_busy_seconds() - busy
        for stage in stages:
            await asyncio.to_thread(stage.stop)
        self.stack.progress.remove_task(bar)
        stamps = await read_stamps(self.bootstrap, *outputs(topics))
        expected = {key.decode() for key, _, _ in tasks}
        if set(stamps) != expected:
            raise RuntimeError(f"{pipeline}: the outputs are not those of the {count} tasks")
        if min(stamps.values()) < began_ms:
            raise RuntimeError(f"{pipeline}: outputs appended before its processes started")
        automatic = len(await read_stamps(self.bootstrap, topics.decisions))
        seconds = (max(stamps.values()) - began_ms) / 1000
        first = (min(stamps.values()) - began_ms) / 1000
        done = Run(count, seconds, first, cpu, automatic, waited, busy)
        self.stack.progress.console.print(
            f"  {what}: first output at {first:.2f} s, last at {seconds:.2f} s; CPU "
            + " + ".join(f"{seconds:.2f}" for seconds in cpu)
            + " s"
        )
        return done


@dataclass(frozen=True)
class Result:
    figures: dict[str, Figures]  # none when the latency phase ran alone
    latencies: dict[str, Latency]


async def run(bench: Bench, only: Sequence[str]) -> Result:
    if "quix" in only:
        bench.uv = await asyncio.to_thread(quix_environment, bench.stack.progress.console)
    # Not counted: a new broker makes its offsets and transaction state topics when a group
    # and a transactional producer first ask, which takes seconds.
    await bench.run("relay", SHORT, "warm-up")
    figures = {} if bench.args.latency_rate else await rounds(bench, only)
    # Half the peak of Tandem's, the pipeline the aim is about (else of the first one run).
    paced = bench.args.latency_rate or figures.get("tandem", figures[only[0]]).tasks_per_s / 2
    records = submitted_records(paced_records(paced, bench.args.latency_seconds), bench.args.seed)
    latencies = {pipeline: await bench.latency(pipeline, paced, records) for pipeline in only}
    return Result(figures, latencies)


async def rounds(bench: Bench, only: Sequence[str]) -> dict[str, Figures]:
    # Round after round, each pipeline's short run then its full one: a change in the machine's
    # other load, or the broker warming up, falls on all of them alike.
    count = len(bench.tasks)
    shorts: dict[str, list[Run]] = {pipeline: [] for pipeline in only}
    fulls: dict[str, list[Run]] = {pipeline: [] for pipeline in only}
    for repeat in range(bench.args.repeats):
        for pipeline in only:
            shorts[pipeline].append(
                await bench.run(pipeline, SHORT, f"{pipeline}-{SHORT}-{repeat}")
            )
            fulls[pipeline].append(await bench.run(pipeline, count, f"{pipeline}-{count}-{repeat}"))
    return {pipeline: Figures(shorts[pipeline], fulls[pipeline]) for pipeline in only}


def report(console: Console, result: Result) -> None:
    if result.figures:
        report_rates(console, result.figures)
    report_latencies(console, result.latencies)


def report_latencies(console: Console, latencies: dict[str, Latency]) -> None:
    table = Table(title="added latency (first output's append time − submitted append time)")
    for column in ("pipeline", "rate (tasks/s)", "tasks", "p50 ms", "p99 ms", "aim"):
        table.add_column(column, justify="left" if column == "pipeline" else "right")
    for pipeline, lat in latencies.items():
        table.add_row(
            PIPELINES[pipeline],
            f"{lat.rate:,.0f}",
            str(lat.count),
            f"{lat.p50_ms:.0f}",
            f"{lat.p99_ms:.0f}",
            "",
        )
    tandem, relay = latencies.get("tandem"), latencies.get("relay")
    if tandem and relay:
        added = tandem.p99_ms - relay.p99_ms
        table.add_row(
            "Tandem − relay",
            "",
            "",
            f"{tandem.p50_ms - relay.p50_ms:+.0f}",
            f"{added:+.0f}",
            verdict(added <= LATENCY_AIM_MS, f"p99 ≤ {LATENCY_AIM_MS:.0f}"),
        )
    console.print(table)


def report_rates(console: Console, figures: dict[str, Figures]) -> None:
    table = Table(
        title="the same two stages (ONNX score, threshold route), one process each: tasks/s "
        f"and CPU over the tasks past the first {SHORT}",
        caption=caption(figures),
    )
    columns = (
        "pipeline",
        "tasks/s",
        "÷ relay",
        "÷ Quix",
        "aim ÷ relay",
        "aim ÷ Quix",
        "CPU µs/task score",
        "route",
        "total",
        "cores busy",
        f"s to last, {SHORT} → all",
        "tasks/s first → last",
    )
    for column in columns:
        first = column == columns[0]
        table.add_column(column, justify="left" if first else "right", no_wrap=first)
    relay, quix = figures.get("relay"), figures.get("quix")
    for pipeline, value in figures.items():
        rate = value.tasks_per_s
        over_relay = rate / relay.tasks_per_s if relay else math.nan
        over_quix = rate / quix.tasks_per_s if quix else math.nan
        aims = ["", ""]
        if pipeline == "tandem":
            aims = [
                ""
                if math.isnan(over_relay)
                else verdict(over_relay >= RELAY_AIM, f"≥ {RELAY_AIM}"),
                "" if math.isnan(over_quix) else verdict(over_quix >= QUIX_AIM, f"≥ {QUIX_AIM}"),
            ]
        cpu = value.cpu_us
        table.add_row(
            PIPELINES[pipeline],
            f"{rate:,.0f}",
            "" if math.isnan(over_relay) else f"{over_relay:.3g}",
            "" if math.isnan(over_quix) else f"{over_quix:.3g}",
            *aims,
            *(f"{us:,.0f}" for us in cpu),
            f"{sum(cpu):,.0f}",
            f"{value.cores_busy:.2f}",
            f"{value.short.seconds:.2f} → {value.full.seconds:.2f}",
            f"{value.first_to_last:,.0f}",
        )
    console.print(table)


def caption(figures: dict[str, Figures]) -> str:
    """Where the full runs' tasks went."""
    rules = {"tandem": "the router's default policy", "quix": f"confidence ≥ {THRESHOLD}"}
    shares = [
        f"{name} {100 * value.full.automatic / value.full.tasks:.1f}% ({rules[name]})"
        for name, value in figures.items()
        if name in rules
    ]
    return f"decided automatically: {', '.join(shares)}" if shares else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, batch_help="records per batch of the services and the relays")
    parser.add_argument(
        "--only",
        default=",".join(PIPELINES),
        help=f"the pipelines to run, of {','.join(PIPELINES)} (default: all)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="rounds of short and full runs; each figure is the median of its runs",
    )
    add_latency_args(parser)
    args = parser.parse_args()
    only = [p for p in PIPELINES if p in args.only.split(",")]
    unknown = set(args.only.split(",")) - set(PIPELINES)
    if unknown or not only:
        parser.error(f"--only takes some of {','.join(PIPELINES)}, not {args.only}")
    if args.tasks <= SHORT or args.batch < 1 or args.repeats < 1:
        parser.error(f"--tasks must exceed {SHORT}, --batch and --repeats be at least 1")

    async def measure(stack: Stack) -> Result:
        return await run(Bench(args, stack, draw_tasks(args.tasks, args.seed)), only)

    # One process per group: no group waits for more members (see run_bench).
    return run_bench(f"drawing {args.tasks} tasks", measure, report, rebalance_delay_ms=0)


if __name__ == "__main__":
    sys.exit(main())

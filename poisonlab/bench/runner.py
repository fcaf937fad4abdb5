"""Runs scenarios' trials, resumably: finished trials are in the store and are skipped on a re-run."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..device import keep_freed_memory, resolve_device
from ..errors import ConfigError
from .scenario import Scenario
from .store import Store
from .trial import check_scenario, run_trials

GPU_BATCH_TRIALS = 10  # trials of a scenario crafted together on a GPU unless asked otherwise


def run_scenarios(scenarios: Sequence[Scenario], out_dir: str | Path, workers: int = 1,
                  progress: bool = True, batch_trials: int | None = None) -> Store:
    """Run every unfinished trial of `scenarios`, recording each in `out_dir`/results.sqlite as it ends.

    `batch_trials`: how many trials of a scenario a targeted feature-space attack crafts in one optimisation
    (None: GPU_BATCH_TRIALS for a scenario on a GPU, 1 on the CPU). A group's trials are recorded when the
    group ends; an interrupted group is re-run whole, so no trial is lost or recorded twice."""
    if batch_trials is not None and batch_trials < 1:
        raise ConfigError(f"trials crafted together must be >= 1; got {batch_trials}.")
    for scenario in scenarios:
        check_scenario(scenario)  # every configuration error surfaces before anything is written or trained
    store = Store(out_dir)
    for scenario in scenarios:
        store.add_scenario(scenario)
    pending = [(s, t) for s in scenarios for t in sorted(set(range(s.trials)) - store.done(s.hash))]
    total = sum(s.trials for s in scenarios)
    with make_progress(progress) as bar:
        task = bar.add_task("trials", total=total, completed=total - len(pending))
        groups = group_trials(pending, batch_trials)
        for scenario, row in execute(groups, workers, str(Path(out_dir) / "models")):
            store.add_trial(scenario.hash, row)
            bar.update(task, advance=1, description=scenario.label)
    return store


def group_trials(pending: list[tuple[Scenario, int]], batch_trials: int | None) -> list[tuple[Scenario, list[int]]]:
    """Consecutive pending trials of one scenario in groups of `batch_trials` (see run_scenarios)."""
    groups: list[tuple[Scenario, list[int]]] = []
    for scenario, trial in pending:
        size = batch_trials if batch_trials is not None else \
            (1 if resolve_device(scenario.device).type == "cpu" else GPU_BATCH_TRIALS)
        if groups and groups[-1][0] is scenario and len(groups[-1][1]) < size:
            groups[-1][1].append(trial)
        else:
            groups.append((scenario, [trial]))
    return groups


def execute(groups: list[tuple[Scenario, list[int]]], workers: int, cache_dir: str):
    """Yield (scenario, row) as groups of trials finish, in this process or in `workers` processes."""
    if workers <= 1 or len(groups) <= 1:
        for scenario, trials in groups:
            for row in run_trials(scenario, trials, cache_dir):
                yield scenario, row
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=start_worker, initargs=(threads,)) as pool:
        futures = {pool.submit(run_trials, s, trials, cache_dir): (s, trials) for s, trials in groups}
        for future in as_completed(futures):
            scenario, _ = futures[future]
            for row in future.result():
                yield scenario, row


def start_worker(threads: int) -> None:
    """A worker process: its share of the cores, and the allocator setting of the command line."""
    torch.set_num_threads(threads)
    keep_freed_memory()


def make_progress(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), TimeElapsedColumn(), console=Console(stderr=True), disable=not enabled,
                    transient=False)

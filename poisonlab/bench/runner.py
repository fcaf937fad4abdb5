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

from .scenario import Scenario
from .store import Store
from .trial import prepare, run_trial


def run_scenarios(scenarios: Sequence[Scenario], out_dir: str | Path, workers: int = 1,
                  progress: bool = True) -> Store:
    """Run every unfinished trial of `scenarios`, recording each in `out_dir`/results.sqlite as it ends."""
    store = Store(out_dir)
    for scenario in scenarios:
        prepare(scenario, 0)  # every configuration error surfaces before the first trial trains
        store.add_scenario(scenario)
    pending = [(s, t) for s in scenarios for t in sorted(set(range(s.trials)) - store.done(s.hash))]
    total = sum(s.trials for s in scenarios)
    with make_progress(progress) as bar:
        task = bar.add_task("trials", total=total, completed=total - len(pending))
        for scenario, trial, result in execute(pending, workers, str(Path(out_dir) / "models")):
            store.add_trial(scenario.hash, trial, result)
            bar.update(task, advance=1, description=scenario.label)
    return store


def execute(pending: list[tuple[Scenario, int]], workers: int, cache_dir: str):
    """Yield (scenario, trial, result) as trials finish, in this process or in `workers` processes."""
    if workers <= 1 or len(pending) <= 1:
        for scenario, trial in pending:
            yield scenario, trial, run_trial(scenario, trial, cache_dir)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=torch.set_num_threads,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(run_trial, s, t, cache_dir): (s, t) for s, t in pending}
        for future in as_completed(futures):
            scenario, trial = futures[future]
            yield scenario, trial, future.result()


def make_progress(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), TimeElapsedColumn(), console=Console(stderr=True), disable=not enabled,
                    transient=False)

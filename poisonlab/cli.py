"""The command line: argument parsing and printing only; the work happens in poisonlab's modules."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from .errors import PoisonlabError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="poisonlab: craft training-data poisoning attacks, retrain the victim, measure what changed.")

OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Output folder: results.sqlite, report.md, "
                                                "report.json. Re-running into the same folder resumes.")]
WorkersOpt = Annotated[int, typer.Option("--workers", "-w", min=1, help="Run trials in N parallel processes.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result rows as JSON instead of a table.")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show the progress bar (stderr).")]
RootOpt = Annotated[str | None, typer.Option("--data-root", help="Folder holding your data files (for npz: "
                                                "the .npz file); searched before $POISONLAB_DATA and the caches.")]


@app.command("list")
def list_cmd() -> None:
    """List the datasets, models, attacks, defenses and suites, one line each."""
    from .attacks import ATTACKS
    from .bench.suites import suite_description, suite_names
    from .data import DATASETS
    from .defenses import DEFENSES
    from .models import MODELS

    sections = {
        "datasets": {k: v.summary for k, v in DATASETS.items()},
        "models": {k: v.summary for k, v in MODELS.items()},
        "attacks": {k: v.summary for k, v in ATTACKS.items()},
        "defenses": {k: v.summary for k, v in DEFENSES.items()},
        "suites": {k: suite_description(k) for k in suite_names()},
    }
    for title, entries in sections.items():
        typer.echo(f"{title}:")
        for name, summary in entries.items():
            typer.echo(f"  {name:<16} {summary}")
        if not entries:
            typer.echo("  (none implemented yet)")


@app.command()
def run(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="A scenario YAML file; flags given "
                                                   "on the command line override its fields.")] = None,
    dataset: Annotated[str | None, typer.Option(help="digits | mnist | fashion-mnist | cifar10 | npz")] = None,
    data_root: RootOpt = None,
    classes: Annotated[str | None, typer.Option(help="Keep only these classes, e.g. 0,4 for a binary task.")]
    = None,
    train_size: Annotated[int | None, typer.Option(help="Seeded random subset of the training set.")] = None,
    test_size: Annotated[int | None, typer.Option(help="Seeded random subset of the test set.")] = None,
    val_size: Annotated[int | None, typer.Option(help="The attacker's validation set, drawn from the training "
                                                 "split apart from the training samples (bilevel attacks).")] = None,
    model: Annotated[str | None, typer.Option(help="logistic | linear-svm | ridge | lasso | mlp | convnet | "
                                                "resnet18")] = None,
    attack: Annotated[str | None, typer.Option(help="none | label-flip | alfa | badnets | blended | svm-kkt | "
                                                 "bilevel-linear | back-gradient (see `list`)")]
    = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Attack hyper-parameter KEY=VALUE "
                                                       "(repeatable), e.g. -p patch_size=4 -p mode=all-to-all.")]
    = None,
    budget: Annotated[str | None, typer.Option(help="Poisons: a count (10) or a fraction of the training set "
                                                  "(0.01).")] = None,
    eps: Annotated[float | None, typer.Option(help="L-inf bound on a poison's change, in [0, 1].")] = None,
    target_class: Annotated[int | None, typer.Option(help="The attacker's target class.")] = None,
    source_class: Annotated[int | None, typer.Option(help="Class-targeted attacks: the class whose test images "
                                                     "should be classified as the target class.")] = None,
    clean_label: Annotated[bool | None, typer.Option("--clean-label/--dirty-label",
                                                        help="Whether poisons must keep their labels.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Victim training epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Victim training batch size.")] = None,
    lr: Annotated[float | None, typer.Option(help="Victim learning rate.")] = None,
    optimizer: Annotated[str | None, typer.Option(help="adam | sgd | exact (linear models solved to optimality)")]
    = None,
    momentum: Annotated[float | None, typer.Option(help="Victim SGD momentum (0 for plain gradient descent).")]
    = None,
    weight_decay: Annotated[float | None, typer.Option(help="Victim L2 weight decay (adam, sgd).")] = None,
    c: Annotated[float | None, typer.Option("--C", help="Inverse regularisation of the exact solvers.")] = None,
    augment: Annotated[str | None, typer.Option(help="none | crop | flip-crop")] = None,
    defense: Annotated[str | None, typer.Option(help="A defense in the loop (see `list`): a detector removes its "
                                                "most suspicious samples and the victim is retrained; dpa trains "
                                                "a certified vote.")] = None,
    defense_param: Annotated[list[str] | None, typer.Option("--defense-param", "-d", help="Defense hyper-parameter "
                                                            "KEY=VALUE (repeatable), e.g. -d removal=0.1.")] = None,
    trials: Annotated[int | None, typer.Option(help="Independent trials (own split, poisons, init).")] = None,
    seed: Annotated[int | None, typer.Option(help="Base seed; trial i uses a seed derived from it.")] = None,
    out: OutOpt = None, workers: WorkersOpt = 1, as_json: JsonOpt = False, progress: ProgressOpt = True,
) -> None:
    """Run one scenario (from flags or a YAML file): craft -> apply -> train the victim -> measure, per trial.

    Example: poisonlab run --dataset fashion-mnist --model convnet --attack badnets --budget 0.01
    --target-class 7 --trials 2 --seed 1 --out runs/badnets --json
    """
    from .bench.scenario import load_yaml, parse_budget, parse_classes, parse_params, scenario_from_dict

    fields = load_yaml(config) if config else {}
    recipe = {k: v for k, v in dict(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                                    augment=augment, C=c, momentum=momentum,
                                    weight_decay=weight_decay).items() if v is not None}
    flags = dict(dataset=dataset, data_root=data_root, train_size=train_size, test_size=test_size,
                 val_size=val_size, model=model,
                 attack=attack, eps=eps, target_class=target_class, source_class=source_class,
                 clean_label=clean_label, trials=trials, defense=defense,
                 defense_params={**fields.get("defense_params", {}), **parse_params(defense_param or [])} or None,
                 seed=seed, classes=parse_classes(classes) if classes else None,
                 budget=parse_budget(budget) if budget is not None else None,
                 attack_params={**fields.get("attack_params", {}), **parse_params(param or [])} or None)
    fields |= {k: v for k, v in flags.items() if v is not None}
    if recipe:
        fields["recipe"] = {**fields.get("recipe", {}), **recipe}
    scenario = scenario_from_dict(fields, str(config) if config else "the command line")
    run_and_report([scenario], out or Path("poisonlab-out") / "run", workers, as_json, progress, scenario.label)


@app.command()
def bench(
    suite: Annotated[str, typer.Option("--suite", "-s", help="A named suite (see `poisonlab list`).")] = "quick",
    out: OutOpt = None, workers: WorkersOpt = 1,
    trials: Annotated[int | None, typer.Option(help="Override every scenario's trial count.")] = None,
    data_root: RootOpt = None, as_json: JsonOpt = False, progress: ProgressOpt = True,
) -> None:
    """Run a named suite of scenarios and print its results table (resumes when re-run into the same --out)."""
    from .bench.suites import load_suite

    loaded = load_suite(suite, data_root, trials)
    for reason in loaded.skipped:
        typer.echo(f"skipped (data not installed): {reason}", err=True)
    out = out or Path("poisonlab-out") / suite
    rows = run_and_report(loaded.scenarios, out, workers, as_json, progress, f"suite {suite}: {loaded.description}")
    if loaded.plot:
        from .bench.plot import write_plot

        path = write_plot(rows, loaded.plot, out)
        typer.echo(f"plot: {path}", err=as_json)


@app.command()
def report(out: Annotated[Path, typer.Argument(help="An output folder of `run` or `bench`.")],
           as_json: JsonOpt = False) -> None:
    """Print (and rewrite) the results table of an output folder, including unfinished scenarios' trials."""
    from .bench.report import summarize, write_report
    from .bench.store import Store

    if not (out / Store.FILENAME).is_file():
        raise PoisonlabError(f"{out} holds no {Store.FILENAME}; point `report` at the --out folder of a run.")
    rows = summarize(Store(out))
    text = write_report(out, rows, f"results in {out}")
    typer.echo(json.dumps(rows, indent=1) if as_json else text)


def run_and_report(scenarios, out: Path, workers: int, as_json: bool, progress: bool, title: str) -> list[dict]:
    from .bench.report import summarize, write_report
    from .bench.runner import run_scenarios

    store = run_scenarios(scenarios, out, workers, progress)
    rows = summarize(store, scenarios)
    text = write_report(out, rows, title)
    typer.echo(json.dumps(rows, indent=1) if as_json else text)
    if not as_json:
        typer.echo(f"results: {out / 'results.sqlite'}; table: {out / 'report.md'}")
    return rows


def main() -> None:
    """Entry point: a PoisonlabError is printed as one paragraph (no traceback) and exits with status 2."""
    try:
        app()
    except PoisonlabError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted: finished trials are saved; run the same command again to resume.", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()

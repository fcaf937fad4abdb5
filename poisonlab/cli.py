"""The command line: argument parsing and printing only; the work happens in poisonlab's modules."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from .attacks import ATTACKS
from .data import DATASETS
from .defenses import DEFENSES, Detector
from .errors import ConfigError, PoisonlabError
from .models import MODELS

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="poisonlab: craft training-data poisoning attacks, retrain the victim, measure what changed.")

OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Output folder: results.sqlite, report.md, "
                                                "report.json. Re-running into the same folder resumes.")]
WorkersOpt = Annotated[int, typer.Option("--workers", "-w", min=1, help="Run trials in N parallel processes.")]
BatchOpt = Annotated[int | None, typer.Option("--batch-trials", min=1, help="Targeted feature-space attacks: "
                                              "craft N trials in one optimisation (default 10 on a GPU, 1 on "
                                              "the CPU); each trial's poisons are those it gets alone.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result rows as JSON instead of a table.")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show the progress bar (stderr).")]
RootOpt = Annotated[str | None, typer.Option("--data-root", help="Folder holding your data files (for npz: "
                                                "the .npz file); searched before $POISONLAB_DATA and the caches.")]


def names(registry, first: tuple[str, ...] = ()) -> str:
    """The registry's names for a help string (so a new attack, defense or model appears by its registry line)."""
    return " | ".join((*first, *registry))


DETECTORS = tuple(name for name, cls in DEFENSES.items() if issubclass(cls, Detector))


@app.command("list")
def list_cmd() -> None:
    """List the datasets, models, attacks, defenses and suites, one line each."""
    from .bench.suites import suite_description, suite_names

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


DeviceOpt = Annotated[str | None, typer.Option(help="Targeted attacks: where networks train and poisons are "
                                              "crafted: cpu | cuda | cuda:N | auto (default cpu).")]
ProtocolOpt = Annotated[str | None, typer.Option(help="Frozen and fine-tuned victims: fast (a quick head, the "
                                                "extractor pretrained on the victim's data) | jht (\"Just How "
                                                "Toxic\"'s SGD recipe with augmentation, pretraining on other "
                                                "images; docs/targeted.md).")]


@app.command()
def run(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="A scenario YAML file; flags given "
                                                   "on the command line override its fields.")] = None,
    dataset: Annotated[str | None, typer.Option(help=names(DATASETS))] = None,
    data_root: RootOpt = None,
    classes: Annotated[str | None, typer.Option(help="Keep only these classes, e.g. 0,4 for a binary task.")]
    = None,
    train_size: Annotated[int | None, typer.Option(help="Seeded random subset of the training set.")] = None,
    test_size: Annotated[int | None, typer.Option(help="Seeded random subset of the test set.")] = None,
    val_size: Annotated[int | None, typer.Option(help="The attacker's validation set, drawn from the training "
                                                 "split apart from the training samples (bilevel attacks).")] = None,
    model: Annotated[str | None, typer.Option(help=names(MODELS))] = None,
    attack: Annotated[str | None, typer.Option(help=f"{names(ATTACKS)} (`poisonlab list` says what each does)")]
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
    setting: Annotated[str | None, typer.Option(help="Targeted attacks: frozen (the victim retrains the linear "
                                                "head on a pretrained network) | finetune | scratch.")] = None,
    knowledge: Annotated[str | None, typer.Option(help="Targeted attacks: white-box (the victim's own pretrained "
                                                  "network) | grey-box (same architecture, other seed) | "
                                                  "black-box (other architectures).")] = None,
    setups: Annotated[str | None, typer.Option(help="A \"Just How Toxic\" setups JSON file: trial i uses the i-th "
                                               "setup whose target is in the loaded data.")] = None,
    protocol: ProtocolOpt = None,
    device: DeviceOpt = None,
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
    defense: Annotated[str | None, typer.Option(help=f"A defense in the loop: {names(DEFENSES, ('none',))} "
                                                "(`poisonlab list` says what each does).")] = None,
    defense_param: Annotated[list[str] | None, typer.Option("--defense-param", "-d", help="Defense hyper-parameter "
                                                            "KEY=VALUE (repeatable), e.g. -d removal=0.1.")] = None,
    trials: Annotated[int | None, typer.Option(help="Independent trials (own split, poisons, init).")] = None,
    seed: Annotated[int | None, typer.Option(help="Base seed; trial i uses a seed derived from it.")] = None,
    out: OutOpt = None, workers: WorkersOpt = 1, batch_trials: BatchOpt = None, as_json: JsonOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Run one scenario (from flags or a YAML file): craft -> apply -> train the victim -> measure, per trial.

    Example: poisonlab run --dataset fashion-mnist --model convnet --attack badnets --budget 0.01
    --target-class 7 --trials 2 --seed 1 --out runs/badnets --json
    """
    from .bench.scenario import load_yaml, merge_mapping, parse_budget, parse_classes, parse_params, scenario_from_dict
    from .data.files import check_writable

    out = check_writable(out or Path("poisonlab-out") / "run", "--out")
    fields = load_yaml(config) if config else {}
    source = str(config) if config else "the command line"
    recipe = {k: v for k, v in dict(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer,
                                    augment=augment, C=c, momentum=momentum,
                                    weight_decay=weight_decay).items() if v is not None}
    flags = dict(dataset=dataset, data_root=data_root, train_size=train_size, test_size=test_size,
                 val_size=val_size, model=model,
                 attack=attack, eps=eps, target_class=target_class, source_class=source_class,
                 clean_label=clean_label, trials=trials, defense=defense, setting=setting, knowledge=knowledge,
                 setups=setups, protocol=protocol, device=device, seed=seed,
                 classes=parse_classes(classes) if classes is not None else None,
                 budget=parse_budget(budget) if budget is not None else None,
                 defense_params=merge_mapping(fields, "defense_params", parse_params(defense_param or [], "defense"),
                                              source),
                 attack_params=merge_mapping(fields, "attack_params", parse_params(param or [], "attack"), source),
                 recipe=merge_mapping(fields, "recipe", recipe, source))
    fields |= {k: v for k, v in flags.items() if v is not None}
    scenario = scenario_from_dict(fields, source)
    run_and_report([scenario], out, workers, as_json, progress, scenario.label, batch_trials)


@app.command()
def bench(
    suite: Annotated[str, typer.Option("--suite", "-s", help="A named suite (see `poisonlab list`).")] = "quick",
    out: OutOpt = None, workers: WorkersOpt = 1, batch_trials: BatchOpt = None,
    trials: Annotated[int | None, typer.Option(help="Override every scenario's trial count.")] = None,
    setups: Annotated[str | None, typer.Option(help="Targeted suites: run the trials of a \"Just How Toxic\" "
                                               "setups JSON file.")] = None,
    protocol: ProtocolOpt = None,
    device: DeviceOpt = None,
    data_root: RootOpt = None,
    pretrain_data_root: Annotated[str | None, typer.Option(
        "--pretrain-data-root", help="Where a suite's pretraining data set lies (toxic-cifar10: CIFAR-100's "
        "cifar-100-python/ or its tar.gz); searched before $POISONLAB_DATA and the caches.")] = None,
    as_json: JsonOpt = False, progress: ProgressOpt = True,
) -> None:
    """Run a named suite of scenarios and print its results table (resumes when re-run into the same --out)."""
    from .bench.suites import load_suite
    from .data.files import check_writable

    out = check_writable(out or Path("poisonlab-out") / suite, "--out")
    loaded = load_suite(suite, data_root, trials, setups, device, protocol, pretrain_data_root)
    for reason in loaded.skipped:
        typer.echo(f"skipped (data not installed): {reason}", err=True)
    rows = run_and_report(loaded.scenarios, out, workers, as_json, progress, f"suite {suite}: {loaded.description}",
                          batch_trials)
    if loaded.matrix:
        from .bench.tables import write_matrix

        path = write_matrix(out, rows, f"suite {suite}: attack × defense")
        typer.echo(f"matrix: {path}", err=as_json)
    if loaded.toxic:
        from .bench.plot import write_poison_figure
        from .bench.tables import write_comparisons, write_toxic

        typer.echo(f"tables: {write_toxic(out, rows, f'suite {suite}: {loaded.description}')}", err=as_json)
        typer.echo(f"paired comparisons: {write_comparisons(out, rows, f'suite {suite}')}", err=as_json)
        shown = [s for s in loaded.scenarios if s.setting == "frozen" and s.knowledge == "white-box"] + \
            [s for s in loaded.scenarios if s.setting == "scratch"][:1]
        typer.echo(f"figure: {write_poison_figure(shown, out)}", err=as_json)
    if loaded.plot:
        from .bench.plot import write_plot

        path = write_plot(rows, loaded.plot, out)
        typer.echo(f"plot: {path}", err=as_json)


DataOpt = Annotated[str, typer.Option(help=names(DATASETS))]
TrainSizeOpt = Annotated[int | None, typer.Option(help="Seeded random subset of the training set (same --seed "
                                                  "and size in `craft` and `scan`).")]
SeedOpt = Annotated[int, typer.Option(min=0, help="Seed of the subset, the attack and the model.")]


@app.command()
def craft(
    out: Annotated[Path, typer.Argument(help="Where to write the PoisonSet (.npz, with a readable .json beside).")],
    attack: Annotated[str, typer.Option(help=names(ATTACKS))],
    dataset: DataOpt = "digits", data_root: RootOpt = None, train_size: TrainSizeOpt = None,
    budget: Annotated[str, typer.Option(help="A count (10) or a fraction of the training set (0.05).")] = "0.05",
    target_class: Annotated[int | None, typer.Option(help="The attacker's target class.")] = None,
    eps: Annotated[float, typer.Option(help="L-inf bound on a poison's change.")] = 1.0,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Attack hyper-parameter KEY=VALUE.")]
    = None,
    seed: SeedOpt = 0,
) -> None:
    """Craft poisons against a data set's (seeded) training subset and save them as a PoisonSet, for `scan` or for
    anyone's training pipeline. Attacks that need a surrogate or validation data run through `run`."""
    from types import SimpleNamespace

    from .attacks import check_compatible, make_attack
    from .bench.scenario import parse_budget, parse_params
    from .data import load_dataset
    from .data.files import check_writable
    from .scan import data_fingerprint
    from .threat import ThreatModel, require_poisons

    out = check_writable(out.with_suffix(".npz"), "the poison set", folder=False)
    chosen = make_attack(attack, **parse_params(param or [], "attack"))
    if chosen.needs != "nothing" or chosen.needs_validation or chosen.targeted:
        asked = SimpleNamespace(target_class=target_class, source_class=None)
        class_level = chosen.targeted and not chosen.single_target(asked)
        either = " (or a source class)" if "source_class" in chosen.threat_fields() else ""
        needs = "a pretrained network to craft on" if class_level else \
            f"a target image{either} and a pretrained network" if chosen.targeted else \
            f"a surrogate model for its {chosen.needs}" if chosen.needs != "nothing" else \
            "the attacker's validation set"
        raise ConfigError(f"{attack} needs {needs}, which `craft` does not build; run it with `poisonlab run "
                          f"--attack {attack} ...` (its poisons are kept beside the run's cached networks).")
    train = load_dataset(dataset, root=data_root).subset(None, train_size, None, seed=seed).train
    threat = ThreatModel.for_data(train, parse_budget(budget), eps=eps, target_class=target_class)
    require_poisons(budget, threat, attack)
    check_compatible(chosen, threat)
    poison = chosen.craft(train, threat, seed=seed)
    data = {"dataset": dataset, "train_size": len(train), "seed": seed, "fingerprint": data_fingerprint(train)}
    path = dataclasses.replace(poison, params={**poison.params, "data": data}).save(out)
    typer.echo(f"{len(poison)} poisons ({attack}) for {dataset} ({len(train)} training images, seed {seed}): {path}")


@app.command()
def scan(
    detector: Annotated[str, typer.Option(help=names(DETECTORS))] = "spectral-signatures",
    dataset: DataOpt = "digits", data_root: RootOpt = None, train_size: TrainSizeOpt = None,
    poison_set: Annotated[Path | None, typer.Option(help="A PoisonSet .npz (from `craft` or the API) to apply to "
                                                     "the training set first; its poisons are then marked.")] = None,
    defense_param: Annotated[list[str] | None, typer.Option("--defense-param", "-d", help="Detector "
                                                            "hyper-parameter KEY=VALUE.")] = None,
    model: Annotated[str, typer.Option(help="The model trained on the data for feature-space detectors.")]
    = "convnet",
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs of that model.")] = 4,
    lr: Annotated[float, typer.Option(help="Its learning rate (Adam, cosine schedule, batch 64).")] = 0.002,
    top: Annotated[int, typer.Option(min=1, help="How many of the most suspicious images the grid shows.")] = 64,
    seed: SeedOpt = 0, out: OutOpt = None, progress: ProgressOpt = True,
) -> None:
    """Rank a training set's samples by a detector's suspicion: writes scan.csv (most suspicious first) and
    top.png (an image grid), training (or loading from the cache in --out) the model the detector needs."""
    from .bench.scenario import parse_params
    from .data.files import check_writable
    from .scan import rank, write_scan

    out = check_writable(out or Path("poisonlab-out") / "scan", "--out")
    if not 0 < lr < float("inf"):
        raise ConfigError(f"--lr {lr} must be a positive learning rate, e.g. 0.002.")
    chosen, train, is_poison = scan_inputs(detector, dataset, data_root, train_size, poison_set, defense_param,
                                           seed, parse_params)
    fitted = scan_model(model, train, epochs, lr, seed, out, progress) if chosen.needs_model else None
    result = rank(chosen, train, fitted, seed=seed, is_poison=is_poison)
    csv_path, png_path = write_scan(result, out, top)
    typer.echo(f"scanned {len(train)} samples with {detector}: ranking {csv_path}, top {top} {png_path}")
    if is_poison is not None:
        n = int(is_poison.sum())
        typer.echo(f"known poisons: {n}; among the top {n}: {result.recall_at(n):.1%}, among the top {round(1.5 * n)}: "
                   f"{result.recall_at(round(1.5 * n)):.1%}; AUROC {result.auroc:.3f}")


def scan_inputs(detector, dataset, data_root, train_size, poison_set, defense_param, seed, parse_params):
    from .data import load_dataset
    from .defenses import make_defense
    from .scan import data_fingerprint
    from .threat import PoisonSet

    chosen = make_defense(detector, **parse_params(defense_param or [], "defense"))
    if not isinstance(chosen, Detector):
        raise PoisonlabError(f"{detector} is not a detector (it does not score training samples); scan takes one "
                             f"of: {', '.join(DETECTORS)}.")
    train = load_dataset(dataset, root=data_root).subset(None, train_size, None, seed=seed).train
    if poison_set is None:
        return chosen, train, None
    poison = PoisonSet.load(poison_set)
    made = poison.params.get("data") or {}
    if not isinstance(made, dict):
        raise PoisonlabError(f"{poison_set}: its params.data must be the mapping `craft` writes (dataset, train_size, "
                             f"seed, fingerprint); got {made!r}.")
    if made and made.get("fingerprint") != data_fingerprint(train):
        raise PoisonlabError(fingerprint_mismatch(poison_set, made, {"dataset": dataset, "train_size": len(train),
                                                                     "seed": seed}))
    poisoned = poison.apply(train)
    return chosen, poisoned, poison.is_poison(poisoned)


def fingerprint_mismatch(path: Path, made: dict, given: dict) -> str:
    """Why a poison set's training data are not these: the options that differ, or (all equal) the files."""
    flags = {"dataset": "--dataset", "train_size": "--train-size", "seed": "--seed"}
    differ = [f"{flags[k]} {made.get(k)} (here {given[k]})" for k in flags if made.get(k) != given[k]]
    if differ:
        return f"{path} was crafted on other training data: pass {', '.join(differ)}."
    return (f"{path} was crafted on {made.get('dataset')} with {made.get('train_size')} training images and seed "
            f"{made.get('seed')}, as here, but the images differ (other data files or --data-root, another "
            "version of the data set, or a changed poison set); scan the data it was crafted on.")


def scan_model(name, train, epochs, lr, seed, out: Path, progress: bool):
    """The model a feature-space detector reads, trained with a progress bar, or loaded from out/models."""
    from .bench.runner import make_progress
    from .models import TrainRecipe, build_model, cached_model
    from .models import train as fit
    from .scan import content_digest

    recipe = TrainRecipe(epochs=epochs, batch_size=64, lr=lr, schedule="cosine")
    config = {"scan": name, "recipe": recipe.key(), "seed": seed, "data": content_digest(train)}

    def train_with_bar(model):
        with make_progress(progress) as bar:
            task = bar.add_task(f"training {name}", total=epochs * -(-len(train) // 64))

            def tick(model, x, y, g):
                bar.advance(task)
                return x, y

            fit(model, train, recipe, seed=seed, batch_hook=tick)

    build = lambda: build_model(name, train.shape, train.num_classes, seed=seed)  # noqa: E731
    return cached_model(config, build, train_with_bar, out / "models")


@app.command()
def report(out: Annotated[Path, typer.Argument(help="An output folder of `run` or `bench`.")],
           as_json: JsonOpt = False) -> None:
    """Print (and rewrite) the results table of an output folder, including unfinished scenarios' trials."""
    from .bench.store import Store
    from .bench.summary import summarize
    from .bench.tables import write_report

    store = Store(out, create=False)
    rows = summarize(store)
    warn_damaged(store)
    text = write_report(out, rows, f"results in {out}")
    typer.echo(json.dumps(rows, indent=1) if as_json else text)


@app.command()
def compare(run_a: Annotated[Path, typer.Argument(help="An output folder of `run` or `bench`.")],
            run_b: Annotated[Path | None, typer.Argument(help="Another output folder (left out: compare the "
                                                         "attacks of RUN_A with each other).")] = None,
            as_json: JsonOpt = False) -> None:
    """Paired differences between attacks on the same trials (same seed, data, target and bases): per cell, each
    attack of RUN_A against each of RUN_B (or every pair of RUN_A's attacks, and each against its control), with
    an exact McNemar p-value for targeted attacks and a paired t-test for rates. Writes nothing."""
    from .bench.compare import comparisons, comparisons_markdown
    from .bench.store import Store
    from .bench.summary import summarize

    stores = [Store(run, create=False) for run in (run_a, run_b) if run is not None]
    rows = [summarize(store) for store in stores]
    for store in stores:
        warn_damaged(store)
    found = comparisons(rows[0], rows[1] if len(rows) > 1 else None)
    if as_json:
        typer.echo(json.dumps([{"cell": cell, **p.to_dict()} for cell, p in found], indent=1))
    else:
        typer.echo(comparisons_markdown(found))


def warn_damaged(store) -> None:
    for message in store.damaged:
        typer.echo(f"warning: {message}", err=True)


def run_and_report(scenarios, out: Path, workers: int, as_json: bool, progress: bool, title: str,
                   batch_trials: int | None = None) -> list[dict]:
    from .bench.runner import run_scenarios
    from .bench.summary import summarize
    from .bench.tables import write_report

    store = run_scenarios(scenarios, out, workers, progress, batch_trials)
    rows = summarize(store, scenarios)
    warn_damaged(store)
    for row in rows:
        for warning in row.get("warnings", ()):
            typer.echo(f"warning: {warning}", err=True)
    text = write_report(out, rows, title)
    typer.echo(json.dumps(rows, indent=1) if as_json else text)
    if not as_json:
        typer.echo(f"results: {out / 'results.sqlite'}; table: {out / 'report.md'}")
    return rows


def main() -> None:
    """Entry point: bad input of any kind (a PoisonlabError, or a flag click refuses) is printed as one line
    starting `error: ` with exit status 2, never a traceback."""
    from .device import keep_freed_memory

    keep_freed_memory()
    try:
        code = app(standalone_mode=False)
    except PoisonlabError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        typer.echo("interrupted: finished trials are saved; run the same command again to resume.", err=True)
        sys.exit(130)
    except Exception as exc:  # click's usage errors (its exception classes move between typer versions)
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help is already printed
            sys.exit(exc.exit_code)
        if not hasattr(exc, "format_message") or not hasattr(exc, "exit_code"):
            raise
        command = f" {exc.ctx.info_name}" if getattr(exc, "ctx", None) is not None and exc.ctx.parent else ""
        fail(f"{exc.format_message()}{given_value(exc)} (see `poisonlab{command} --help`)")
    sys.exit(code if isinstance(code, int) else 0)


def given_value(exc) -> str:
    """' (got X)' for a flag whose value click refused (its message names the flag, not what was typed)."""
    opts = getattr(getattr(exc, "param", None), "opts", None) or []
    args = sys.argv[1:]
    for i, arg in reversed(list(enumerate(args))):  # the last occurrence is the one click read
        flag, eq, value = arg.partition("=")
        if flag in opts:
            value = value if eq else (args[i + 1] if i + 1 < len(args) else None)
            return "" if value is None else f" (got {value!r})"
    return ""


def fail(message: str) -> None:
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    sys.exit(2)


if __name__ == "__main__":
    main()

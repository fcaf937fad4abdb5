"""Stored trials aggregated into one summary row per scenario (plain dicts, as report.json holds them).

Rates pool their counts over the scenario's trials: clean accuracy and test error over test images, attack
success over the attack's inputs (triggered test images, a source class, or one target image per trial). A rate
over test images gets the trial-clustered interval (`TrialRates`: trials are the unit of replication) and keeps
the per-trial rates it came from (`<rate>_per_trial`); a rate with one Bernoulli per trial (a targeted attack's
success) gets the Wilson interval over trials. Every measure has its `control_` twin: the same victim trained on
the clean set."""

from __future__ import annotations

from ..attacks import make_attack
from ..data import DATASETS, load_dataset
from ..defenses import DEFENSES
from ..metrics import Rate, TrialRates
from .compare import pairing_key
from .rows import TrialRow
from .scenario import Scenario
from .store import Store


def summarize(store: Store, scenarios: list[Scenario] | None = None) -> list[dict]:
    """One row per scenario that has finished trials."""
    rows = []
    for scenario in scenarios if scenarios is not None else store.scenarios():
        trials = store.trials(scenario)
        if trials:
            rows.append(summary_row(scenario, trials))
    return rows


def goal(scenario: Scenario) -> str | None:
    """What the scenario's attack pursues (integrity or availability; the clean baseline: the scenario's own)."""
    return make_attack(scenario.attack, **scenario.attack_params).goal(scenario) or scenario.goal


def rate_fields(name: str, rate: Rate | TrialRates | None, per_trial: list | None = None) -> dict:
    """`name`, its interval (`<name without _rate>_ci`) and, for a pooled rate, `<name>_per_trial`."""
    fields = {name: rate.value if rate else None, f"{name.removesuffix('_rate')}_ci": list(rate.ci) if rate else None}
    if isinstance(rate, TrialRates):
        per_trial = rate.per_trial
    return fields | ({f"{name}_per_trial": per_trial} if per_trial is not None or rate is None else {})


def pooled(trials: list[TrialRow], count, of) -> TrialRates:
    """Per-trial `count(t)` of `of(t)`; the trials share their units when they share their test split."""
    return TrialRates(tuple(count(t) for t in trials), tuple(of(t) for t in trials),
                      len({t.test_digest for t in trials}) == 1)


def total(trials: list[TrialRow], field: str) -> int:
    return sum(getattr(t, field) for t in trials)


def mean(trials: list, field: str) -> float:
    return sum(getattr(t, field) for t in trials) / len(trials)


def summary_row(scenario: Scenario, trials: list[TrialRow]) -> dict:
    accuracy = pooled(trials, lambda t: t.correct, lambda t: t.n_test)
    control_accuracy = pooled(trials, lambda t: t.control_correct, lambda t: t.n_test)
    row = {"scenario": scenario.label, "dataset": scenario.dataset, "model": scenario.model,
           "attack": scenario.attack, "budget": scenario.budget, "goal": goal(scenario), "setting": scenario.setting,
           "knowledge": scenario.knowledge, "eps": scenario.eps, "defense": scenario.defense,
           "targeted": trials[0].targeted is not None, "n_poisons": trials[0].n_poisons, "trials": len(trials)}
    row |= rate_fields("clean_accuracy", accuracy) | rate_fields("control_clean_accuracy", control_accuracy)
    row |= rate_fields("test_error", pooled(trials, lambda t: t.n_test - t.correct, lambda t: t.n_test))
    row |= rate_fields("control_test_error", pooled(trials, lambda t: t.n_test - t.control_correct,
                                                    lambda t: t.n_test))
    row |= attack_fields(trials)
    row |= rate_fields("other_classes_accuracy", pooled(trials, lambda t: t.others_correct, lambda t: t.n_others))
    row |= rate_fields("control_other_classes_accuracy", pooled(trials, lambda t: t.control_others_correct,
                                                                lambda t: t.n_others))
    row["ci_method"] = accuracy.method
    row |= {"trial_per_trial": [t.trial for t in trials], "seed_per_trial": [t.seed for t in trials]}
    row |= {"max_perturbation": max(t.max_perturbation for t in trials),
            "seconds_per_trial": mean(trials, "seconds"), "craft_seconds_per_trial": mean(trials, "craft_seconds"),
            "train_seconds_per_trial": mean(trials, "train_seconds"), "scenario_hash": scenario.hash,
            "pairing_key": pairing_key(scenario)}
    row["warnings"] = chance_warnings(scenario, control_accuracy)
    if trials[0].targeted is not None:
        row |= targeted_fields(scenario, trials)
    if scenario.defense != "none":
        row |= defense_fields(scenario, trials)
    return row


def chance_warnings(scenario: Scenario, control_accuracy: TrialRates) -> list[str]:
    """A warning when the clean-trained victim is near chance (within a tenth of the way from chance to
    perfect): its recipe has not trained it, and what the attack changes means little."""
    classes = len(scenario.classes) if scenario.classes else num_classes(scenario.dataset, scenario.data_root)
    chance = 1 / classes
    if control_accuracy.value >= chance + 0.1 * (1 - chance):
        return []
    return [f"{scenario.label}: the victim trained on clean data reaches {control_accuracy.value:.1%} clean "
            f"accuracy, near chance ({chance:.0%} for {classes} classes); its recipe does not train it (raise "
            "--epochs or --lr, or leave the recipe to the model's default) and the attack's effect means little."]


def num_classes(dataset: str, data_root: str | None) -> int:
    info = DATASETS[dataset]
    return info.num_classes or load_dataset(dataset, root=data_root, download=False).train.num_classes


def attack_fields(trials: list[TrialRow]) -> dict:
    """Attack success and the control's, with their counts (None for an availability attack): Wilson over trials
    when each trial has one input (a target image), else trial-clustered over the pooled inputs."""
    if trials[0].attack_inputs is None:
        return {**rate_fields("attack_success_rate", None), **rate_fields("control_attack_success_rate", None),
                "attack_successes": None, "control_attack_successes": None, "attack_inputs": None,
                "attack_success_ci_method": None}
    inputs = total(trials, "attack_inputs")
    if all(t.attack_inputs == 1 for t in trials):
        success = Rate(total(trials, "attack_hits"), inputs)
        control = Rate(total(trials, "control_attack_hits"), inputs)
        fields = {**rate_fields("attack_success_rate", success, [t.attack_hits for t in trials]),
                  **rate_fields("control_attack_success_rate", control, [t.control_attack_hits for t in trials]),
                  "attack_success_ci_method": "wilson over trials (one Bernoulli per trial)"}
    else:
        success = pooled(trials, lambda t: t.attack_hits, lambda t: t.attack_inputs)
        control = pooled(trials, lambda t: t.control_attack_hits, lambda t: t.attack_inputs)
        fields = {**rate_fields("attack_success_rate", success),
                  **rate_fields("control_attack_success_rate", control), "attack_success_ci_method": success.method}
    return fields | {"attack_successes": total(trials, "attack_hits"),
                     "control_attack_successes": total(trials, "control_attack_hits"), "attack_inputs": inputs}


def targeted_fields(scenario: Scenario, trials: list[TrialRow]) -> dict:
    """A targeted attack's row: the feature losses compare the poisons with random ±eps noise on the bases
    (bullseye's relative loss on the victim's pretrained network); the target's adversarial loss on the victim
    and the control; where the trials' targets came from."""
    parts = [t.targeted for t in trials]
    return {"relative_feature_loss": mean(parts, "relative_feature_loss"),
            "noise_feature_loss": mean(parts, "noise_feature_loss"),
            "target_adversarial_loss": mean(parts, "target_adversarial_loss"),
            "control_adversarial_loss": mean(parts, "control_adversarial_loss"),
            "setups": scenario.setups, "setups_skipped": parts[0].setups_skipped,
            "bases_topped_up": sum(p.bases_topped_up for p in parts),
            "protocol": scenario.protocol, "victim_recipe": victim_recipe(scenario),
            "pretrain_dataset": scenario.pretrain_dataset or scenario.dataset, "pretrain_size": parts[0].pretrain_size,
            "pretrain_disjoint": all(p.pretrain_disjoint for p in parts),
            "target_image_index_per_trial": [p.target_image_index for p in parts],
            "target_position_per_trial": [p.target_position for p in parts],
            "target_class_per_trial": [p.target_class for p in parts],
            "base_indices_per_trial": [p.base_indices for p in parts]}


def victim_recipe(scenario: Scenario) -> dict:
    """How the victim was trained: optimiser, learning rate and its schedule, epochs, batch, augmentation (and,
    for a frozen head, the augmented views it read)."""
    keys = ("optimizer", "lr", "momentum", "nesterov", "weight_decay", "epochs", "batch_size", "schedule",
            "milestones", "augment", "pad", "views", "trainable")
    return scenario.recipe.model_dump(mode="json", include=set(keys))


def defense_fields(scenario: Scenario, trials: list[TrialRow]) -> dict:
    """With a defense in the loop the row's accuracy and success are the defended victim's; these add the
    undefended victim's and what the defense's own counts summarise to (its `Counts.summarise`)."""
    parts = [t.defense for t in trials]
    inputs = total(trials, "attack_inputs") if trials[0].attack_inputs is not None else 0
    counts_type = DEFENSES[scenario.defense].Counts
    return {"defense_params": scenario.defense_params,
            "undefended_clean_accuracy": sum(p.undefended_correct for p in parts) / total(trials, "n_test"),
            "undefended_attack_success_rate": sum(p.undefended_attack_hits for p in parts) / inputs if inputs
            else None,
            "defense_seconds_per_trial": mean(parts, "defense_seconds"),
            **counts_type.summarise([counts_type(**p.counts) for p in parts])}

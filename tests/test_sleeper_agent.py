"""Sleeper Agent (Souri et al. 2022): its selection, source gradient, retraining schedule, protocol and effect."""

import pytest
import torch
from torch.nn import functional as F

import poisonlab.attacks.sleeper_agent as sleeper
from poisonlab.attacks import check_compatible, make_attack
from poisonlab.attacks.witches_brew import alignment, parameter_gradient
from poisonlab.bench.plan import make_plan
from poisonlab.bench.scenario import scenario_from_dict
from poisonlab.errors import ConfigError
from poisonlab.models import build_model, for_second_order, predict
from poisonlab.models.train import TrainRecipe, train
from poisonlab.threat import ThreatModel

QUICK = TrainRecipe(epochs=4, batch_size=64, lr=3e-3, schedule="cosine")


@pytest.fixture(scope="module")
def trained(digits):
    """A convnet trained briefly on digits: the surrogate the poisons are crafted on."""
    return train(build_model("convnet", digits.train.shape, 10, seed=0), digits.train, QUICK, seed=0)


def test_gradient_norms_are_the_per_sample_gradient_norms(digits, trained):
    x, y = digits.train.x[:12], digits.train.y[:12]
    params = [p for p in trained.parameters() if p.requires_grad]
    expected = torch.stack([torch.cat([g.flatten() for g in torch.autograd.grad(
        F.cross_entropy(trained(x[i:i + 1]), y[i:i + 1]), params)]).norm() for i in range(len(x))])
    assert torch.allclose(sleeper.gradient_norms(trained, x, y, chunk=5), expected, rtol=1e-4, atol=1e-6)
    assert not trained.training


def test_the_poisons_are_the_target_class_images_of_largest_gradient_norm(digits, trained):
    threat = ThreatModel.for_data(digits.train, 10, eps=16 / 255, target_class=7, source_class=1)
    chosen = make_attack("sleeper-agent").select([trained], digits.train, threat, torch.Generator())
    candidates = torch.nonzero(digits.train.y == 7).squeeze(1)
    norms = sleeper.gradient_norms(trained, digits.train.x[candidates], digits.train.y[candidates])
    assert torch.equal(chosen, candidates[norms.topk(10).indices].sort().values)
    drawn = make_attack("sleeper-agent", selection="random").select([trained], digits.train, threat,
                                                                     torch.Generator().manual_seed(0))
    assert len(drawn) == 10 and bool((digits.train.y[drawn] == 7).all()) and not torch.equal(drawn, chosen)


def test_the_source_gradient_is_the_mean_over_triggered_sources_labelled_as_the_target(digits, trained):
    attack = make_attack("sleeper-agent", patch_size=3)
    threat = ThreatModel.for_data(digits.train, 10, eps=16 / 255, target_class=7, source_class=1)
    triggered = attack.triggered_sources(digits.train, threat, attack.trigger(digits.train.shape),
                                         torch.Generator(), torch.Generator().manual_seed(0))
    assert len(triggered) == int((digits.train.y == 1).sum())
    changed = (triggered != digits.train.x[digits.train.y == 1]).flatten(1).any(1)
    assert float(changed.float().mean()) > 0.9  # the patch sits at a different place on each
    whole = parameter_gradient(trained, triggered, torch.full((len(triggered),), 7))
    assert torch.allclose(sleeper.source_gradients([trained], triggered, 7, chunk=50)[0], whole, atol=1e-6)


def test_from_scratch_the_surrogates_are_retrained_on_the_current_poisons_at_the_official_steps(digits, trained,
                                                                                                 monkeypatch):
    """Official schedule: at every `retrain_every`-th step except the first and the last (50, 100, 150, 200 of 250),
    fresh networks trained on the training set holding the poisons; none outside the from-scratch setting."""
    seen = []

    def spy(model, data, recipe, seed=None):
        seen.append((data, recipe, [p.detach().clone() for p in model.parameters()]))
        return model.eval()

    monkeypatch.setattr(sleeper, "train", spy)
    attack = make_attack("sleeper-agent", steps=9, retrain_every=2, patch_size=3, recipe=QUICK.model_dump())
    threat = ThreatModel.for_data(digits.train, 6, eps=16 / 255, target_class=7, source_class=1)
    poison = attack.craft(digits.train, threat, trained, seed=0)
    assert len(seen) == 3 and all(recipe == QUICK for _, recipe, _ in seen)  # after steps 2, 4, 6 of 0..8
    for data, _, weights in seen:
        assert not torch.equal(data.x[poison.indices], digits.train.x[poison.indices])  # the poisons are in it
        assert not all(torch.equal(w, p) for w, p in zip(weights, trained.parameters(), strict=True))
    seen.clear()
    attack.craft(digits.train, ThreatModel.for_data(digits.train, 6, eps=16 / 255, target_class=7, source_class=1,
                                                    setting="frozen"), trained, seed=0)
    assert not seen


def test_the_runner_passes_the_surrogates_pretraining_recipe_unless_given_one():
    fields = dict(dataset="digits", model="convnet", attack="sleeper-agent", setting="scratch", budget=10,
                  eps=16 / 255, target_class=7, source_class=1, pretrain=dict(epochs=7, lr=0.002))
    plan = make_plan(scenario_from_dict(fields))
    assert plan.attack.recipe == TrainRecipe(epochs=7, lr=0.002) and not plan.targeted
    given = make_plan(scenario_from_dict(fields | {"attack_params": {"recipe": {"epochs": 2}}}))
    assert given.attack.recipe == TrainRecipe(epochs=2)


def test_without_a_target_class_it_says_what_it_needs_before_training(digits):
    with pytest.raises(ConfigError, match="--target-class T and --source-class S"):
        check_compatible(make_attack("sleeper-agent"), ThreatModel.for_data(digits.train, 10),
                         surrogate_from_trial=True)
    with pytest.raises(ConfigError, match="--target-class T"):
        make_attack("sleeper-agent", steps=1, patch_size=2).craft(digits.train, ThreatModel.for_data(digits.train, 5),
                                                                  build_model("convnet", digits.train.shape, 10))


def test_the_poisons_align_with_the_triggered_sources_on_a_network_they_were_not_crafted_on(digits, trained):
    """The objective transfers: on a convnet trained from another initialisation, the poisons' training gradient
    points much closer to the triggered sources' than their bases' does."""
    attack = make_attack("sleeper-agent", steps=60, patch_size=3, augment=False, retrain_every=0)
    threat = ThreatModel.for_data(digits.train, 20, eps=32 / 255, target_class=9, source_class=4)
    poison = attack.craft(digits.train, threat, trained, seed=0)
    other = for_second_order(train(build_model("convnet", digits.train.shape, 10, seed=3), digits.train, QUICK,
                                   seed=3)).eval()
    triggered = attack.triggered_sources(digits.train, threat, poison.trigger, torch.Generator(),
                                         torch.Generator().manual_seed(1))
    grads = sleeper.source_gradients([other], triggered, 9)
    labels = digits.train.y[poison.indices]
    on_poisons, on_bases = (float(alignment([other], x, labels, grads))
                            for x in (poison.x, digits.train.x[poison.indices]))
    assert on_poisons > on_bases + 0.25, (on_poisons, on_bases)


@pytest.mark.slow
def test_from_scratch_victims_learn_the_trigger_they_never_saw(digits):
    """Digits from scratch (convnets by the CLBD effect test's recipe; the surrogate pretrained the same way), 40
    poisons at 32/255, a 3×3 trigger at random places, pairs 1→7, 3→8, 4→9, 0→6, two victim seeds each; no
    retraining while crafting (its four retrainings would take 4× the crafting time here). Triggered source test
    images classified as the target, pooled (AMD EPYC, AVX2, 2026-12-07): 25/290 = 8.6% for the poisoned victims
    against 8/290 = 2.8% for the clean ones; the poisoned victim above its clean twin in 5 of the 8 trials and
    below it in none."""
    recipe = TrainRecipe(epochs=20, batch_size=64, lr=3e-3, schedule="cosine")
    train_set, test = digits.train, digits.test
    surrogate = train(build_model("convnet", train_set.shape, 10, seed=0), train_set, recipe, seed=0)
    controls = {s: train(build_model("convnet", train_set.shape, 10, seed=s), train_set, recipe, seed=s)
                for s in (5, 6)}
    attack = make_attack("sleeper-agent", patch_size=3, augment=False, retrain_every=0)
    hits, control_hits, total, above, below = 0, 0, 0, 0, 0
    for source, target in ((1, 7), (3, 8), (4, 9), (0, 6)):
        threat = ThreatModel.for_data(train_set, 40, eps=32 / 255, target_class=target, source_class=source)
        poison = attack.craft(train_set, threat, surrogate, seed=1)
        triggered = poison.trigger.apply(test.x[test.y == source])
        for seed, control in controls.items():
            victim = train(build_model("convnet", train_set.shape, 10, seed=seed), poison.apply(train_set), recipe,
                           seed=seed)
            h, c = (int((predict(m, triggered) == target).sum()) for m in (victim, control))
            hits, control_hits, total = hits + h, control_hits + c, total + len(triggered)
            above, below = above + (h > c), below + (h < c)
    assert hits / total >= control_hits / total + 0.03 and above >= 4 and below == 0, (hits, control_hits, above,
                                                                                        below)


@pytest.mark.slow
def test_the_gpu_suite_runs_end_to_end_on_the_cpu_at_toy_scale(cifar_subset_path, tmp_path):
    """backdoors-cifar10 has not run on a GPU here (CI has none). Each of its cells runs one toy trial on the
    CPU: ResNet-18s by the official recipes' optimisers (one epoch), the sleeper agent's selection, matching and one
    retraining of the surrogate through the runner, the clean-label backdoor's PGD and four-corner trigger, the
    class-level rows; everything but the device and the scale."""
    from poisonlab.bench.runner import run_scenarios
    from poisonlab.bench.suites import load_suite
    from poisonlab.bench.summary import summarize

    suite = load_suite("backdoors-cifar10", data_root=str(cifar_subset_path), trials=1, device="cpu")
    cells = []
    for scenario in suite.scenarios:
        data = scenario.model_dump(mode="json")
        short = {**data["recipe"], "epochs": 1, "batch_size": 32, "milestones": []}
        brief = {"steps": 3, "retrain_every": 1} if scenario.attack == "sleeper-agent" else {"steps": 3}
        data.update(train_size=200, test_size=100, budget=4, recipe=short, pretrain=short,
                    attack_params=data["attack_params"] | brief)
        cells.append(scenario_from_dict(data))
    rows = summarize(run_scenarios(cells, tmp_path, progress=False), cells)
    pairs = [(3, 5), (0, 1), (1, 2), (2, 3), (None, 0)]
    assert [(c.source_class, c.target_class) for c in cells] == pairs
    assert [r["scenario"] for r in rows] == [f"cifar10: sleeper-agent {s}→{t}" for s, t in pairs[:4]] + \
        ["cifar10: clean-label-backdoor →0"]
    assert cells[-1].attack_params["trigger"] == "all-corners" and cells[-1].eps == pytest.approx(8 / 255)
    for row in rows:
        assert row["model"] == "resnet18" and row["setting"] == "scratch" and row["attack_inputs"] > 0
        assert 0 <= row["attack_success_rate"] <= 1 and 0 <= row["control_attack_success_rate"] <= 1
    for row in rows[:4]:  # the clean-label backdoor's trigger is pasted over its eps-bounded change
        assert row["max_perturbation"] <= 16 / 255 + 1e-6


import pytest
import torch

from poisonlab.attacks import make_attack
from poisonlab.errors import ConfigError, DataError
from poisonlab.threat import PoisonSet, ThreatModel, Trigger, resolve_budget


def test_budget_is_a_count_or_a_fraction():
    assert resolve_budget(10, 1000) == 10
    assert resolve_budget(0.01, 1000) == 10
    assert resolve_budget(1.0, 1000) == 1000


@pytest.mark.parametrize("budget, message", [(2.0, "ambiguous"), (1.5, "not a fraction"), (-0.1, "not a fraction"),
                                             (5000, "exceeds the training set of 1000"), (float("nan"), "number")])
def test_bad_budgets_are_refused_with_a_fix(budget, message):
    with pytest.raises(ConfigError, match=message):
        resolve_budget(budget, 1000)


def test_threat_model_validates_eps_and_target(digits):
    with pytest.raises(ConfigError, match=r"eps 1.5 must lie in \[0, 1\]"):
        ThreatModel.for_data(digits.train, 10, eps=1.5)
    with pytest.raises(ConfigError, match="target class 12 does not exist"):
        ThreatModel.for_data(digits.train, 10, target_class=12)
    with pytest.raises(ConfigError, match="knowledge"):
        ThreatModel.for_data(digits.train, 10, knowledge="omniscient")
    threat = ThreatModel.for_data(digits.train, 0.05, eps=8 / 255, target_class=3)
    assert threat.budget == 72 and threat.n_train == 1437


def test_poison_set_round_trips_through_npz(tmp_path, digits):
    threat = ThreatModel.for_data(digits.train, 20, target_class=7)
    poison = make_attack("badnets", pattern="random").craft(digits.train, threat, seed=1)
    path = poison.save(tmp_path / "poisons")
    assert path.suffix == ".npz" and path.with_suffix(".json").is_file()
    loaded = PoisonSet.load(path)
    assert torch.equal(loaded.x, poison.x) and torch.equal(loaded.indices, poison.indices)
    assert torch.equal(loaded.trigger.apply(digits.test.x), poison.trigger.apply(digits.test.x))
    assert (loaded.target_class, loaded.backdoor_mode, loaded.params) == (7, "all-to-one", poison.params)


def test_poison_set_refuses_mismatched_data(tmp_path, digits, fashion):
    threat = ThreatModel.for_data(digits.train, 20, target_class=7)
    poison = make_attack("badnets").craft(digits.train, threat)
    with pytest.raises(DataError, match="poisons are"):
        poison.apply(fashion.test)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match="not an .npz .zip. file; expected a poison set"):
        PoisonSet.load(tmp_path / "junk.npz")


def test_poison_set_validates_its_parts():
    with pytest.raises(DataError, match="distinct"):
        PoisonSet(torch.tensor([1, 1]), torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.long), 2, "x")
    with pytest.raises(DataError, match="one of each"):
        PoisonSet(torch.tensor([1, 2]), torch.zeros(1, 1, 2, 2), torch.zeros(2, dtype=torch.long), 2, "x")


def test_class_targeted_threat_needs_a_distinct_existing_source_class(digits):
    threat = ThreatModel.for_data(digits.train, 10, target_class=3, source_class=8)
    assert (threat.source_class, threat.target_class) == (8, 3)
    with pytest.raises(ConfigError, match="target class"):
        ThreatModel.for_data(digits.train, 10, source_class=8)
    with pytest.raises(ConfigError, match="both 3"):
        ThreatModel.for_data(digits.train, 10, target_class=3, source_class=3)
    with pytest.raises(ConfigError, match="0..9"):
        ThreatModel.for_data(digits.train, 10, target_class=3, source_class=12)


def test_poison_sets_name_their_target_by_its_official_index_and_old_targeted_sets_are_refused(tmp_path):
    import json

    import numpy as np

    poison = PoisonSet(torch.tensor([1, 4]), torch.rand(2, 1, 8, 8), torch.tensor([3, 3]), 10, "bullseye-polytope",
                       target_class=3, target_image_index=917)
    path = poison.save(tmp_path / "p")
    assert json.loads(path.with_suffix(".json").read_text())["format"] == "poisonlab.PoisonSet/2"
    assert PoisonSet.load(path).target_image_index == 917

    def old_format(name: str, target_index) -> str:
        meta = {"format": "poisonlab.PoisonSet/1", "num_classes": 10, "attack": "badnets", "target_class": 3,
                "backdoor_mode": None, "target_index": target_index, "params": {}, "n_poisons": 2}
        np.savez(tmp_path / name, indices=poison.indices.numpy(), x=poison.x.numpy(), y=poison.y.numpy(),
                 metadata=np.array(json.dumps(meta)))
        (tmp_path / name).with_suffix(".json").write_text(json.dumps(meta))
        return str(tmp_path / name)

    assert PoisonSet.load(old_format("untargeted.npz", None)).target_image_index is None
    with pytest.raises(DataError, match="format-1 poison set whose target is a position"):
        PoisonSet.load(old_format("targeted.npz", 5))


def test_a_randomly_placed_trigger_moves_the_whole_patch_the_same_way_on_every_call(tmp_path, digits):
    mask, pattern = torch.zeros(1, 8, 8), torch.zeros(1, 8, 8)
    mask[:, 5:7, 5:7], pattern[:, 5:7, 5:7] = 1.0, torch.tensor([[0.2, 0.4], [0.6, 0.8]])
    trigger = Trigger(mask, pattern, "random", placement_seed=3)
    x = torch.zeros(200, 1, 8, 8)
    out = trigger.apply(x)
    assert torch.equal(out, trigger.apply(x))  # seeded: a poisoned and a control victim see the same images
    placed = torch.nonzero(out > 0)
    for i in (0, 57, 199):  # the 2×2 patch, whole and in order, somewhere inside the image
        rows, cols = placed[placed[:, 0] == i][:, 2], placed[placed[:, 0] == i][:, 3]
        top, left = int(rows.min()), int(cols.min())
        assert torch.equal(out[i, 0, top:top + 2, left:left + 2], pattern[0, 5:7, 5:7]) and len(rows) == 4
    corners = {tuple(int(v) for v in torch.nonzero(out[i, 0] > 0)[0]) for i in range(200)}
    assert len(corners) == 49  # every one of the 7×7 places is drawn
    other = trigger.apply(x, g=torch.Generator().manual_seed(9))
    assert not torch.equal(other, out)
    threat = ThreatModel.for_data(digits.train, 3, target_class=1)
    poison = make_attack("badnets").craft(digits.train, threat)
    fixed = poison.trigger
    moved = PoisonSet(poison.indices, poison.x, poison.y, 10, "x", 1, Trigger(fixed.mask, fixed.pattern, "random", 4),
                      "all-to-one")
    loaded = PoisonSet.load(moved.save(tmp_path / "moved"))
    assert loaded.trigger.placement == "random" and loaded.trigger.placement_seed == 4
    assert torch.equal(loaded.trigger.apply(digits.test.x), moved.trigger.apply(digits.test.x))
    with pytest.raises(DataError, match="placement 'anywhere'"):
        Trigger(mask, pattern, "anywhere")

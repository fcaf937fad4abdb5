import io
import json
import pickle
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from unittest import mock

import numpy as np
import pytest

from poisonlab.cli import main
from tests.test_data import Evil, write_cifar_batches

FIELDS = {"scenario", "trials", "clean_accuracy", "attack_success_rate", "attack_success_ci", "test_error",
          "seconds_per_trial"}


def poisonlab(*args, check=False):
    """`poisonlab ARGS` run in this process through the console script's own entry point (`main`, which turns
    errors into exit status 2): its exit status and output, as a subprocess would give them, without paying
    seconds of imports per call. `test_the_console_entry_point_runs_in_its_own_process` covers a real process."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with mock.patch.object(sys, "argv", ["poisonlab", *args]), redirect_stdout(out), redirect_stderr(err):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    result = subprocess.CompletedProcess(["poisonlab", *args], code, out.getvalue(), err.getvalue())
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_the_console_entry_point_runs_in_its_own_process(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "poisonlab.cli", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "Usage" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "poisonlab.cli", "run", "--attack", "badnets", "--budget", "2.0",
                          "--target-class", "1", "--out", str(tmp_path)], capture_output=True, text=True)
    assert_one_paragraph_error(bad, "budget 2.0 is ambiguous")


def test_list_names_every_registry():
    out = poisonlab("list", check=True).stdout
    for name in ("digits", "fashion-mnist", "convnet", "resnet18", "badnets", "blended", "label-flip", "quick"):
        assert name in out


@pytest.mark.parametrize("command", [[], ["run"], ["bench"], ["report"], ["compare"], ["list"], ["craft"], ["scan"]])
def test_every_command_has_useful_help(command):
    out = poisonlab(*command, "--help", check=True).stdout
    assert "Usage" in out and len(out.splitlines()) > 5


def test_run_prints_json_rows_with_the_stable_fields(tmp_path):
    out = poisonlab("run", "--dataset", "digits", "--model", "logistic", "--attack", "badnets", "--budget", "0.05",
                    "--target-class", "7", "--epochs", "3", "--trials", "2", "--seed", "1", "--out", str(tmp_path),
                    "--json", "--no-progress", check=True).stdout
    [row] = json.loads(out)
    assert FIELDS <= row.keys() and row["trials"] == 2
    low, high = row["attack_success_ci"]
    assert low <= row["attack_success_rate"] <= high
    assert (tmp_path / "report.md").is_file() and (tmp_path / "results.sqlite").is_file()
    report = poisonlab("report", str(tmp_path), check=True).stdout
    assert "digits/logistic/badnets@0.05" in report


def test_run_with_a_detector_in_the_loop_reports_detection_and_the_defended_victim(tmp_path):
    out = poisonlab("run", "--dataset", "digits", "--model", "logistic", "--attack", "label-flip", "--budget", "0.05",
                    "--classes", "0,1", "--optimizer", "exact", "--defense", "slab", "--trials", "2", "--out",
                    str(tmp_path), "--json", "--no-progress", check=True).stdout
    [row] = json.loads(out)
    assert row["defense"] == "slab" and row["scenario"].endswith("+slab")
    assert row["detection_recall"] >= 0.9 and row["detection_auroc"] >= 0.99 and row["detection_precision"] > 0.5
    assert row["removed_fraction"] == pytest.approx(1.5 * 0.05, abs=0.01)
    assert row["clean_accuracy"] >= row["undefended_clean_accuracy"] - 0.01


def test_run_with_dpa_reports_a_certified_accuracy_curve(tmp_path):
    out = poisonlab("run", "--dataset", "digits", "--model", "logistic", "--optimizer", "exact", "--attack",
                    "label-flip", "--budget", "10", "--defense", "dpa", "-d", "partitions=4", "--out", str(tmp_path),
                    "--json", "--no-progress", check=True).stdout
    [row] = json.loads(out)
    curve = row["certified_accuracy"]
    assert len(curve) == 3 and curve[0] == pytest.approx(row["clean_accuracy"]) and curve[0] >= curve[1] >= curve[2]
    assert_one_paragraph_error(poisonlab("run", "--defense", "dpa", "-d", "parts=3", "--out", str(tmp_path / "x")),
                               "partitions")


def test_craft_then_scan_ranks_the_poisons_near_the_top_and_writes_csv_and_grid(tmp_path):
    poisons = tmp_path / "flips.npz"
    poisonlab("craft", str(poisons), "--attack", "label-flip", "--dataset", "digits", "--train-size", "1000",
              "--budget", "0.05", "--seed", "3", check=True)
    out = poisonlab("scan", "--detector", "deep-knn", "-d", "space=input", "-d", "k=10", "--dataset", "digits",
                    "--train-size", "1000", "--poison-set", str(poisons), "--seed", "3", "--top", "16", "--out",
                    str(tmp_path / "scan"), "--no-progress", check=True).stdout
    assert "known poisons: 50" in out
    rows = (tmp_path / "scan" / "scan.csv").read_text().splitlines()
    assert rows[0].startswith("rank,index,source_index,label,class,score,is_poison") and len(rows) == 1 + 1000
    top = [int(line.split(",")[-1]) for line in rows[1:51]]
    assert sum(top) >= 0.9 * 50  # the known poisons fill the first places
    assert (tmp_path / "scan" / "top.png").stat().st_size > 1000
    wrong_seed = poisonlab("scan", "--dataset", "digits", "--train-size", "1000", "--poison-set", str(poisons),
                           "--seed", "4", "--detector", "slab", "--out", str(tmp_path / "x"))
    assert_one_paragraph_error(wrong_seed, "--seed")
    assert_one_paragraph_error(poisonlab("scan", "--detector", "dpa", "--out", str(tmp_path / "y")), "detector")


@pytest.mark.slow
def test_scan_ranks_badnets_poisons_first_on_a_poisoned_fashion_mnist_set(tmp_path, fashion):
    poisons = tmp_path / "badnets.npz"
    poisonlab("craft", str(poisons), "--attack", "badnets", "-p", "patch_size=4", "-p", "pattern=checkerboard",
              "--dataset", "fashion-mnist", "--train-size", "6000", "--budget", "0.05", "--target-class", "7",
              check=True)
    # 5% in one class: the global ranking (the paper's per-class rule would take 450 from every class)
    out = poisonlab("scan", "--detector", "spectral-signatures", "-d", "ranking=global", "--dataset", "fashion-mnist",
                    "--train-size", "6000", "--poison-set", str(poisons), "--out", str(tmp_path / "scan"),
                    "--no-progress", check=True).stdout
    assert "known poisons: 300" in out
    rows = (tmp_path / "scan" / "scan.csv").read_text().splitlines()[1:]
    assert sum(int(line.split(",")[-1]) for line in rows[:450]) >= 0.9 * 300
    # the default ranks each class on its own: its top 10 rows hold one sample of each class
    poisonlab("scan", "--detector", "spectral-signatures", "--dataset", "fashion-mnist", "--train-size", "6000",
              "--poison-set", str(poisons), "--out", str(tmp_path / "per-class"), "--no-progress", check=True)
    top = (tmp_path / "per-class" / "scan.csv").read_text().splitlines()[1:11]
    assert len({line.split(",")[3] for line in top}) == 10


def test_scan_trains_the_feature_model_once_and_reuses_it(tmp_path):
    args = ["scan", "--detector", "spectral-signatures", "--dataset", "digits", "--model", "mlp", "--epochs", "2",
            "--top", "4", "--out", str(tmp_path), "--no-progress"]
    poisonlab(*args, check=True)
    first = (tmp_path / "scan.csv").read_text()
    assert len(list((tmp_path / "models").glob("*.pt"))) == 1
    poisonlab(*args, check=True)
    assert (tmp_path / "scan.csv").read_text() == first


def test_run_reads_a_yaml_scenario_and_flags_override_it(tmp_path):
    config = tmp_path / "s.yaml"
    config.write_text("dataset: digits\nmodel: logistic\nattack: label-flip\nbudget: 0.1\nrecipe: {epochs: 2}\n")
    out = poisonlab("run", "-c", str(config), "--budget", "20", "--out", str(tmp_path / "o"), "--json",
                    "--no-progress", check=True).stdout
    [row] = json.loads(out)
    assert row["n_poisons"] == 20 and row["attack_success_rate"] is None


def assert_one_paragraph_error(result, *fragments):
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    for fragment in fragments:
        assert fragment in result.stderr


def test_budget_of_two_is_a_clear_error(tmp_path):
    result = poisonlab("run", "--attack", "badnets", "--budget", "2.0", "--target-class", "1", "--out", str(tmp_path))
    assert_one_paragraph_error(result, "budget 2.0 is ambiguous")


def test_nonexistent_target_class_is_a_clear_error(tmp_path):
    result = poisonlab("run", "--attack", "badnets", "--budget", "0.01", "--target-class", "12", "--out", str(tmp_path))
    assert_one_paragraph_error(result, "target class 12 does not exist")


def test_corrupt_and_missing_data_files_are_clear_errors(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    result = poisonlab("run", "--dataset", "npz", "--data-root", str(tmp_path / "bad.npz"), "--out", str(tmp_path))
    assert_one_paragraph_error(result, "bad.npz", "not an .npz (zip) file")
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b truncated")
    result = poisonlab("run", "--dataset", "mnist", "--data-root", str(tmp_path), "--out", str(tmp_path / "o"))
    assert_one_paragraph_error(result, "train-images-idx3-ubyte.gz")


def test_malicious_pickle_is_refused(tmp_path):
    write_cifar_batches(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(Evil()))
    result = poisonlab("run", "--dataset", "cifar10", "--data-root", str(tmp_path), "--out", str(tmp_path / "o"))
    assert_one_paragraph_error(result, "refused to unpickle")
    assert not (tmp_path / "pwned-by-pickle").exists()


def test_unknown_names_and_typos_are_clear_errors(tmp_path):
    assert_one_paragraph_error(poisonlab("run", "--attack", "badnetz", "--out", str(tmp_path)), "badnets")
    assert_one_paragraph_error(poisonlab("run", "-p", "patchsize=3", "--attack", "badnets", "--target-class", "1",
                                         "--budget", "3", "--out", str(tmp_path)), "patch_size")
    assert_one_paragraph_error(poisonlab("bench", "--suite", "nope"), "quick")
    assert_one_paragraph_error(poisonlab("report", str(tmp_path / "nothing")), "results.sqlite")


def test_npz_data_runs_end_to_end(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(200) % 2
    x = (rng.random((200, 6, 6)) * 0.3 + y[:, None, None] * 0.5).astype(np.float32)
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    out = poisonlab("run", "--dataset", "npz", "--data-root", str(tmp_path / "mine.npz"), "--model", "logistic",
                    "--epochs", "30", "--lr", "0.05", "--out", str(tmp_path / "o"), "--json", "--no-progress",
                    check=True).stdout
    assert json.loads(out)[0]["clean_accuracy"] > 0.9


TARGETED_FIELDS = {"attack_success_rate", "attack_success_ci", "control_attack_success_rate", "clean_accuracy",
                   "trials", "craft_seconds_per_trial", "train_seconds_per_trial"}
DEFENDED_FIELDS = {"defense", "undefended_attack_success_rate", "undefended_clean_accuracy", "detection_recall",
                   "detection_precision", "detection_auroc"}


def test_run_a_targeted_attack_from_a_setups_file_prints_the_targeted_fields(tmp_path, cifar_subset_path, setups_dir):
    config = tmp_path / "s.yaml"
    config.write_text("pretrain: {epochs: 1, batch_size: 256, lr: 0.003}\n")  # a quick network: fields, not effect
    out = poisonlab("run", "-c", str(config), "--dataset", "cifar10", "--data-root", str(cifar_subset_path),
                    "--attack", "bullseye-polytope", "-p", "steps=5", "--setting", "frozen", "--budget", "25",
                    "--eps", "0.0314", "--trials", "2", "--setups",
                    str(setups_dir / "cifar10_transfer_learning.json"), "--out", str(tmp_path / "o"), "--json",
                    "--no-progress", check=True).stdout
    [row] = json.loads(out)
    assert TARGETED_FIELDS <= row.keys() and row["trials"] == 2
    assert row["setups_skipped"] == 91 and row["bases_topped_up"] == 25 - 5 + 25 - 1  # 5 and 1 bases present
    too_many = poisonlab("run", "-c", str(config), "--dataset", "cifar10", "--data-root", str(cifar_subset_path),
                         "--attack", "bullseye-polytope", "--setting", "frozen", "--budget", "25", "--trials", "10",
                         "--setups", str(setups_dir / "cifar10_transfer_learning.json"), "--out", str(tmp_path / "p"))
    assert too_many.returncode == 2 and "at most 9 trials" in too_many.stderr


def test_a_targeted_attack_runs_with_a_detector_in_the_loop(tmp_path):
    """Clean-label poisons against a frozen victim, deep k-NN (the defense made for them) between: the row has
    the attack's success before and after the defense, the control's, and the detection of the poisons."""
    out = poisonlab("run", "--dataset", "digits", "--model", "convnet", "--attack", "bullseye-polytope", "-p",
                    "steps=20", "--setting", "frozen", "--budget", "10", "--eps", "0.1", "--defense", "deep-knn",
                    "-d", "rule=top", "-d", "k=20", "--trials", "2", "--out", str(tmp_path), "--json", "--no-progress",
                    check=True).stdout
    [row] = json.loads(out)
    assert TARGETED_FIELDS | DEFENDED_FIELDS <= row.keys() and row["trials"] == 2 and row["targeted"]
    assert 0 <= row["detection_recall"] <= 1 and 0 < row["removed_fraction"] < 0.02  # 1.5 x 10 poisons
    assert "recall" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_the_issue_command_prints_the_targeted_and_defended_fields_and_peri_s_rule_stops_the_attack(
        tmp_path, cifar_subset_path):
    """deep-knn's default, Peri et al.'s plurality vote of 101 neighbours (measured: 4/4 undefended, 0/4 defended,
    recall 0.90, 18% of the training set removed, accuracy unchanged)."""
    command = ("run", "--dataset", "cifar10", "--data-root", str(cifar_subset_path), "--model", "convnet",
               "--attack", "bullseye-polytope", "--setting", "frozen", "--knowledge", "white-box", "--budget", "25",
               "--eps", "0.0627", "--defense", "deep-knn", "--trials", "4", "--json", "--no-progress",
               "--out", str(tmp_path))
    [peri] = json.loads(poisonlab(*command, check=True).stdout)
    assert TARGETED_FIELDS | DEFENDED_FIELDS <= peri.keys() and peri["trials"] == 4
    assert peri["undefended_attack_success_rate"] >= 0.75 and peri["attack_success_rate"] <= 0.25, peri
    assert peri["detection_recall"] >= 0.75 and peri["removed_fraction"] < 0.3, peri
    assert abs(peri["clean_accuracy"] - peri["undefended_clean_accuracy"]) <= 0.02, peri


def test_compare_pairs_two_runs_trials_and_names_the_test(tmp_path):
    """Two runs of different attacks on the same cell: `compare` pairs their trials (same seed, target, bases),
    with the exact McNemar p-value; one run alone compares its attacks with each other and with the control."""
    common = ("dataset: digits\nmodel: convnet\nsetting: frozen\nbudget: 5\neps: 0.1\ntrials: 3\ntrain_size: 600\n"
              "test_size: 200\nsampling: first\npretrain: {epochs: 2}\n")
    for attack in ("feature-collision", "bullseye-polytope"):
        (tmp_path / f"{attack}.yaml").write_text(common + f"attack: {attack}\nattack_params: {{steps: 3}}\n")
        poisonlab("run", "--config", str(tmp_path / f"{attack}.yaml"), "--out", str(tmp_path / attack),
                  "--no-progress", check=True)
    result = poisonlab("compare", str(tmp_path / "feature-collision"), str(tmp_path / "bullseye-polytope"), "--json",
                       check=True)
    [paired] = json.loads(result.stdout)
    assert (paired["trials"], paired["unpaired"], paired["test"]) == (3, 0, "exact McNemar")
    assert "feature-collision" in paired["a"] and "bullseye-polytope" in paired["b"]
    assert 0 <= paired["p_value"] <= 1 and paired["ci"][0] <= paired["difference"] <= paired["ci"][1]
    table = poisonlab("compare", str(tmp_path / "feature-collision"), check=True).stdout
    assert "| control |" in table and "exact McNemar" in table
    assert_one_paragraph_error(poisonlab("compare", str(tmp_path / "nowhere")), "holds no results.sqlite")

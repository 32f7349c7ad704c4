"""output_parser.py on generated output trees: results.json, log fallbacks, holes, LaTeX structure, paper comparison."""

import json
import os
import re
import subprocess
import sys

import pytest

import output_parser as op
from clipkit import names

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TRAIN_LOG = """** Arguments **
eval_only: False
Evaluate on the *val* set
=> result
* total: 10
* correct: 9
* accuracy: 90.0%
epoch [1/1] batch [1/1] loss 0.1
Finish training
Deploy the last-epoch model
Evaluate on the *test* set
=> result
* total: 1,000
* correct: 555
* accuracy: {acc}%
* error: 44.5%
* macro_f1: 50.0%
Elapsed: 0:00:01
"""

EVAL_ONLY_LOG = """** Arguments **
eval_only: True
Note that load_model() is skipped as no pretrained model is given
Evaluate on the *test* set
=> result
* total: 100
* correct: 42
* accuracy: {acc}%
"""

INTERRUPTED_LOG = """** Arguments **
eval_only: False
Evaluate on the *test* set
=> result
* accuracy: 99.0%
epoch [2/5] batch [1/1]
"""


def run_dir(root, method, dataset, seed, backbone="vit_b32"):
    path = os.path.join(str(root), backbone, dataset, method, f"seed{seed}")
    os.makedirs(path, exist_ok=True)
    return path


def write_results(root, method, dataset, seed, last, best=None, backbone="vit_b32", epochs=None, best_epoch=None):
    path = run_dir(root, method, dataset, seed, backbone)
    data = {"method": method, "dataset": dataset, "backbone": backbone, "seed": seed, "accuracy_last": last,
            "accuracy_best": last if best is None else best, "best_epoch": best_epoch,
            "best_is_test_selection": True, "epochs": epochs or []}
    with open(os.path.join(path, "results.json"), "w") as handle:
        json.dump(data, handle)
    return path


def write_text(path, text):
    with open(path, "w") as handle:
        handle.write(text)


@pytest.fixture
def tree(tmp_path):
    """Two methods x two datasets x three seeds with every kind of hole."""
    root = tmp_path / "output"
    for seed, (a, b) in zip((1, 2, 3), ((60.0, 40.0), (62.0, 42.0), (64.0, 44.0))):
        write_results(root, "MicroCLIP", "dtd", seed, a, a + 1)
        write_results(root, "MicroCLIP", "oxford_pets", seed, b, b + 1)
        write_results(root, "ZeroshotCLIP", "dtd", seed, 50.0)
    # ZeroshotCLIP / oxford_pets: seed 1 log-only (eval-only), seed 2 failed, seed 3 missing entirely
    write_text(os.path.join(run_dir(root, "ZeroshotCLIP", "oxford_pets", 1), "log.txt"), EVAL_ONLY_LOG.format(acc=80.0))
    write_text(os.path.join(run_dir(root, "ZeroshotCLIP", "oxford_pets", 2), "failed.txt"),
               "command: python train.py\nexit code: 1\nerror: RuntimeError: CUDA out of memory\n--- stderr tail ---\n")
    return str(root)


def test_log_parsing_rules():
    assert op.parse_log_accuracy(TRAIN_LOG.format(acc=55.5)) == 55.5  # the val block before Finish training is ignored
    assert op.parse_log_accuracy(EVAL_ONLY_LOG.format(acc=42.0)) == 42.0
    assert op.parse_log_accuracy(INTERRUPTED_LOG) is None  # per-epoch test block of an unfinished training run
    assert op.parse_log_accuracy("") is None


def test_timestamped_rerun_newest_wins(tmp_path):
    path = run_dir(tmp_path, "UPL", "dtd", 1)
    write_text(os.path.join(path, "log.txt"), TRAIN_LOG.format(acc=10.0))
    write_text(os.path.join(path, "log.txt-2026-01-02-10-00-00"), TRAIN_LOG.format(acc=30.0))
    write_text(os.path.join(path, "log.txt-2026-01-01-10-00-00"), TRAIN_LOG.format(acc=20.0))
    write_text(os.path.join(path, "log.txt-2026-01-03-10-00-00"), INTERRUPTED_LOG)  # newest has no result yet
    run = op.read_run(path)
    assert (run.status, run.accuracy["last"], run.source) == ("ok", 30.0, "log.txt-2026-01-02-10-00-00")
    assert run.accuracy["best"] is None  # logs carry no per-epoch selection


def test_results_json_wins_over_logs_and_failure(tmp_path):
    path = write_results(tmp_path, "UPL", "dtd", 1, 70.0, 75.0)
    write_text(os.path.join(path, "log.txt"), TRAIN_LOG.format(acc=10.0))
    write_text(os.path.join(path, "failed.txt"), "error: old failure\n")
    run = op.read_run(path)
    assert (run.status, run.accuracy, run.source) == ("ok", {"last": 70.0, "best": 75.0}, "results.json")


def test_corrupt_results_json_falls_back_to_log(tmp_path, capsys):
    path = run_dir(tmp_path, "UPL", "dtd", 1)
    write_text(os.path.join(path, "results.json"), "{not json")
    write_text(os.path.join(path, "log.txt"), TRAIN_LOG.format(acc=12.5))
    run = op.read_run(path)
    assert (run.status, run.accuracy["last"]) == ("ok", 12.5)
    assert "results.json" in capsys.readouterr().err


def test_table_cells_seeds_and_holes(tree):
    runs = op.find_runs(tree)
    assert len(runs) == 11  # 9 results.json + log-only + failed (the missing seed has no folder)
    table = op.build_table(runs, "vit_b32", "accuracy", "last")
    assert table.methods == ["ZeroshotCLIP", "MicroCLIP"]  # names.py order: CLIP rows first
    assert table.datasets == ["dtd", "oxford_pets"]  # paper column order
    assert table.seeds == [1, 2, 3]
    dtd = table.cells[("MicroCLIP", "dtd")]
    assert dtd.complete and dtd.mean == pytest.approx(62.0)
    assert dtd.spread() == pytest.approx((8 / 3) ** 0.5)  # population std, as CoOp's parse_test_res
    assert table.avg["MicroCLIP"].mean == pytest.approx(52.0)
    assert table.avg["MicroCLIP"].values == {1: 50.0, 2: 52.0, 3: 54.0}  # per-seed means over datasets
    pets = table.cells[("ZeroshotCLIP", "oxford_pets")]
    assert pets.values == {1: 80.0} and pets.failed and not pets.complete
    assert table.avg["ZeroshotCLIP"] is None  # never averaged over an incomplete row
    assert any("CUDA out of memory" in note for note in table.notes)

    best = op.build_table(runs, "vit_b32", "accuracy", "best")
    assert best.cells[("MicroCLIP", "dtd")].mean == pytest.approx(63.0)
    assert best.cells[("ZeroshotCLIP", "oxford_pets")].values == {}  # the log-only seed has no best-epoch value


def test_markdown_marks_partial_failed_and_missing(tree, tmp_path):
    # a third dataset where ZeroshotCLIP only failed and MicroCLIP has no folder at all
    write_text(os.path.join(run_dir(tree, "ZeroshotCLIP", "food101", 1), "failed.txt"), "error: boom\n")
    table = op.build_table(op.find_runs(tree), "vit_b32", "accuracy", "last")
    text = op.render(table, "markdown", "accuracy", "last")
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in text.splitlines() if line.startswith("| ") and "Method" not in line}
    assert table.datasets == ["dtd", "food101", "oxford_pets"]
    assert rows["CLIP"] == ["50.00 ± 0.00", "fail", "80.00 (1/3)", "--"]  # partial cells are not ranked
    assert rows["microCLIP"] == ["**62.00** ± 1.63", "--", "**42.00** ± 1.63", "--"]


def test_latex_structure_bold_and_underline(tmp_path):
    root = tmp_path / "out"
    scores = {"ZeroshotCLIP": (50.0, 70.0), "UPL": (55.0, 60.0), "MicroCLIP": (58.0, 65.0), "LaFTer": (40.0, 10.0)}
    for method, (a, b) in scores.items():
        write_results(root, method, "dtd", 1, a)
        write_results(root, method, "ucf101", 1, b)
    table = op.build_table(op.find_runs(str(root)), "vit_b32", "accuracy", "last")
    latex = op.render(table, "latex", "accuracy", "last")
    assert latex.count("{") == latex.count("}")
    depth = 0
    for ch in latex:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    for env in ("table*", "tabular"):
        assert latex.count(rf"\begin{{{env}}}") == latex.count(rf"\end{{{env}}}") == 1
    assert all(cmd in latex for cmd in (r"\toprule", r"\midrule", r"\bottomrule"))
    body = latex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert len(body) == 4
    rows = {line.split(" & ")[0]: line.rstrip(r" \\").split(" & ")[1:] for line in body}
    assert list(rows) == ["CLIP", "UPL", "LaFTer", "microCLIP"]
    assert rows["microCLIP"][0] == r"\textbf{58.00}" and rows["UPL"][0] == r"\underline{55.00}"
    assert rows["CLIP"][1] == r"\textbf{70.00}" and rows["microCLIP"][1] == r"\underline{65.00}"
    assert rows["microCLIP"][2] == r"\textbf{61.50}" and rows["CLIP"][2] == r"\underline{60.00}"  # Avg column
    assert rows["LaFTer"] == ["40.00", "10.00", "25.00"]
    assert sum(line.count(r"\textbf") for line in body) == 3
    assert sum(line.count(r"\underline") for line in body) == 3
    assert r"\caption{Top-1 accuracy (\%), ViT-B/32, last epoch" in latex


def test_latex_escapes_and_seed_spread(tree):
    table = op.build_table(op.find_runs(tree), "vit_b32", "accuracy", "best")
    latex = op.render(table, "latex", "accuracy", "best", display={"MicroCLIP": "micro_CLIP & co"})
    assert r"micro\_CLIP \& co" in latex
    assert r"\textbf{63.00}{\scriptsize$\pm$1.63}" in latex
    assert "selected on the test set" in latex


def test_vs_paper_rows_and_reclip_misprint(tmp_path):
    root = tmp_path / "out"
    write_results(root, "MicroCLIP", "dtd", 1, 61.0)
    write_results(root, "MicroCLIP", "oxford_pets", 1, 89.0)
    write_results(root, "ReCLIP", "dtd", 1, 50.0)
    write_results(root, "ReCLIP", "oxford_pets", 1, 60.0)
    paper = op.load_paper_table(op.paper_table_path("vit_b32"))
    assert paper.rows["microclip"]["dtd"] == 60.00 and len(paper.rows["microclip"]) == 13
    notes = op.printed_average_notes(paper)
    assert len(notes) == 1 and "ReCLIP" in notes[0] and "64.69" in notes[0] and "65.05" in notes[0]
    table = op.build_table(op.find_runs(str(root)), "vit_b32", "accuracy", "last")
    text = op.render(table, "csv", "accuracy", "last", paper=paper)
    rows = {line.split(",")[1]: line.split(",")[2:] for line in text.splitlines()[1:]}
    assert rows["microCLIP (paper)"][0::3] == ["60.00", "90.24", "75.12"]  # DTD, Pets, Avg recomputed from cells
    assert rows["microCLIP (ours - paper)"][0::3] == ["+1.00", "-1.24", "-0.12"]
    assert rows["ReCLIP (paper)"][0:6:3] == ["53.88", "85.27"]
    assert list(rows) == ["ReCLIP", "ReCLIP (paper)", "ReCLIP (ours - paper)", "microCLIP", "microCLIP (paper)",
                          "microCLIP (ours - paper)"]


def test_paper_tables_match_their_printed_averages():
    for backbone, count in (("vit_b32", 13), ("vit_b16", 6)):
        paper = op.load_paper_table(op.paper_table_path(backbone))
        assert all(len(row) == count for row in paper.rows.values())
        assert set(paper.rows) <= {n.key for n in names.METHODS}  # every paper label maps to a known method
        assert all(names.canonical_dataset(d) == d for row in paper.rows.values() for d in row)
    with pytest.raises(FileNotFoundError, match="no paper table for backbone 'tiny'"):
        op.paper_table_path("tiny")


def test_pseudo_label_table(tmp_path):
    root = tmp_path / "out"
    epochs = [{"epoch": 1, "accuracy": 50.0, "pl_accuracy": 40.0}, {"epoch": 2, "accuracy": 49.0, "pl_accuracy": 45.0}]
    write_results(root, "MicroCLIP", "dtd", 1, 49.0, 50.0, epochs=epochs, best_epoch=1)
    write_results(root, "ZeroshotCLIP", "dtd", 1, 30.0)  # logs no pseudo-labels: left out of the table
    runs = op.find_runs(str(root))
    last = op.build_table(runs, "vit_b32", "pl_accuracy", "last")
    assert last.methods == ["MicroCLIP"] and last.cells[("MicroCLIP", "dtd")].mean == 45.0
    best = op.build_table(runs, "vit_b32", "pl_accuracy", "best")
    assert best.cells[("MicroCLIP", "dtd")].mean == 40.0  # the pseudo-label accuracy at the selected epoch


def test_cli_formats_and_errors(tree, tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, os.path.join(REPO, "output_parser.py"), *args],
                              capture_output=True, text=True, cwd=str(tmp_path))

    done = cli(tree, "--format", "csv", "--methods", "microCLIP", "--datasets", "Pets,dtd")  # display names work too
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0] == ("backbone,method,oxford_pets,oxford_pets_std,oxford_pets_seeds,dtd,dtd_std,dtd_seeds,avg,"
                        "avg_std,avg_seeds")
    assert lines[1] == "vit_b32,microCLIP,42.00,1.63,,62.00,1.63,,52.00,1.63,"
    assert "CUDA out of memory" not in done.stdout  # notes of filtered rows do not leak; csv notes go to stderr

    markdown = cli(tree, "--display-name", "MicroCLIP=Ours")
    assert markdown.returncode == 0 and "| Ours" in markdown.stdout and "note: failed:" in markdown.stdout

    pseudo = cli(tree, "--table", "pseudo-labels")
    assert pseudo.returncode == 1 and "no run logged pl_accuracy" in pseudo.stderr

    empty = cli(str(tmp_path / "nothing"))
    assert empty.returncode == 2 and "is not a folder" in empty.stderr
    bad = cli(tree, "--display-name", "oops")
    assert bad.returncode == 2 and "METHOD=DISPLAY NAME" in bad.stderr


def test_parser_imports_no_torch():
    code = "import sys, output_parser; assert 'torch' not in sys.modules and 'dassl' not in sys.modules; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_names_fallbacks_and_order():
    assert names.method_display_name("ZeroshotCLIP") == "CLIP"
    assert names.method_display_name("BrandNewMethod") == "BrandNewMethod"
    assert names.sort_methods(["Zeta", "MicroCLIP", "Alpha", "CuPL"]) == ["CuPL", "MicroCLIP", "Alpha", "Zeta"]
    assert names.sort_datasets(["tiny", "ucf101", "my_set", "birdsnap"]) == ["birdsnap", "ucf101", "tiny", "my_set"]
    assert names.canonical_dataset("Flowers102") == "oxford_flowers"
    assert names.dataset_display_name("new_key") == "new_key"
    assert re.fullmatch(r"ViT-B/\d+", names.backbone_display_name("vit_b16"))

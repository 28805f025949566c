"""Tests for lth.runfolder's CSV files and lth.analysis.report, on run folders generated
from known numbers.
"""

import csv
import io
import math
import statistics

import pytest
import torch

from helpers import BRANCHES, acc_end, es_acc, es_iter, layer_counts, make_run, weights_remaining
from lth.analysis.report import report
from lth.analysis.results import aggregate
from lth.errors import LTHError
from lth.runfolder.csvio import csv_text, read_csv, to_float
from lth.runfolder.readers import load_summary

# ----------------------------------------------------------------------------- CSV files


def test_csv_round_trip(tmp_path):
    rows = [{"a": 1, "b": 0.1 + 0.2, "c": None}, {"a": 2, "b": float("nan"), "c": "x,y"}]
    text = csv_text(rows, ["a", "b", "c"])
    assert text.splitlines()[0] == "a,b,c"
    (tmp_path / "t.csv").write_text(text)
    back = read_csv(tmp_path / "t.csv")
    assert back == [
        {"a": "1", "b": "0.30000000000000004", "c": ""},
        {"a": "2", "b": "", "c": "x,y"},
    ]
    assert to_float(back[0]["b"]) == 0.1 + 0.2
    assert math.isnan(to_float("")) and math.isnan(to_float("  "))
    with pytest.raises(ValueError):
        to_float("abc")


def test_schemas_are_declared_once_with_a_meaning_per_column():
    from lth.runfolder.tables import TABLES, schema_markdown

    text = schema_markdown()
    for table in TABLES:
        assert f"`{table.file}`" in text
        assert len(set(table.names)) == len(table.names) and set(table.key) <= set(table.names)
        for column in table.columns:
            assert column.meaning and f"| `{column.name}` |" in text


def test_missing_values_are_empty_cells_and_nan_still_reads(tmp_path):
    from lth.runfolder.csvio import read_rows, read_table
    from lth.runfolder.tables import SUMMARY

    text = csv_text([{"branch": "ticket", "test_acc": math.nan, "diverged_at": None}], SUMMARY)
    assert text.splitlines()[1] == "ticket" + "," * (len(SUMMARY.columns) - 1)
    old = tmp_path / "old.csv"  # lth wrote NaN as nan before
    old.write_text(
        ",".join(SUMMARY.names[:9]) + "\nticket,0,0,100.0,NaN,100,nan,nan,\n"
    )  # 9 columns
    (row,) = read_table(old, SUMMARY)
    assert math.isnan(row["test_acc"]) and math.isnan(row["best_val_acc"])
    assert row["diverged_at"] is None and row["early_stop_iteration"] == 100
    (raw,) = read_rows(old, SUMMARY)  # as a resume reads it: written back in one spelling
    assert raw["test_acc"] == raw["best_val_acc"] == "" and raw["level"] == "0"


def test_read_csv_errors(tmp_path):
    with pytest.raises(LTHError, match="missing.csv not found"):
        read_csv(tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(LTHError, match="empty.csv has no header"):
        read_csv(tmp_path / "empty.csv")
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n3\n")
    with pytest.raises(LTHError, match="ragged.csv line 3"):
        read_csv(tmp_path / "ragged.csv")
    (tmp_path / "bin.csv").write_bytes(b"a,b\n\xff\xfe,1\n")
    with pytest.raises(LTHError, match="cannot read .*bin.csv"):
        read_csv(tmp_path / "bin.csv")


# ----------------------------------------------------------------------------- loading


def test_missing_summary_is_one_line_error(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "summary.csv").unlink()
    with pytest.raises(LTHError) as e:
        report(run)
    msg = str(e.value)
    assert "summary.csv" in msg and "\n" not in msg


@pytest.mark.parametrize(
    "content, words",
    [
        ("branch,replicate,level\nticket,0,0\n", "lacks column 'weights_remaining'"),
        (
            "branch,replicate,level,weights_remaining,test_acc,early_stop_iteration,"
            "test_acc_at_early_stop\nticket,zero,0,100,98,100,98\n",
            "replicate = 'zero' is not a whole number",
        ),
        (
            "branch,replicate,level,weights_remaining,test_acc,early_stop_iteration,"
            "test_acc_at_early_stop\n",
            "no data rows",
        ),
    ],
)
def test_malformed_summary(tmp_path, content, words):
    run = make_run(tmp_path / "run")
    (run / "summary.csv").write_text(content)
    with pytest.raises(LTHError, match=words) as e:
        report(run)
    assert "summary.csv" in str(e.value) and "\n" not in str(e.value)


def test_missing_run_folder_and_bad_format(tmp_path):
    with pytest.raises(LTHError, match="does not exist"):
        report(tmp_path / "nope")
    run = make_run(tmp_path / "run")
    with pytest.raises(LTHError, match="unknown report format 'html'"):
        report(run, fmt="html")


def test_aggregate_mean_std_over_replicates(tmp_path):
    run = make_run(tmp_path / "run", replicates=3, diverged={("reinit", 2, 1)})
    stats = {(s.branch, s.level): s for s in aggregate(load_summary(run), "test_acc")}
    wr = weights_remaining(3)
    for b in BRANCHES:
        for lv in range(4):
            s = stats[(b, lv)]
            used = [r for r in range(3) if not (b == "reinit" and r == 2 and lv == 1)]
            values = [acc_end(b, r, lv) for r in used]
            assert s.weights_remaining == pytest.approx(wr[lv])
            assert s.mean == pytest.approx(statistics.mean(values))
            assert s.std == pytest.approx(statistics.stdev(values))
            assert s.n == len(used) and s.replicates == 3
    assert stats[("reinit", 1)].diverged == (2,)


# ----------------------------------------------------------------------------- report


def test_table_report_single_replicate(tmp_path):
    run = make_run(tmp_path / "myrun")
    text = report(run, layers=True)
    assert "myrun" in text and "lenet_300_100 on mnist" in text
    # the accuracy table first, the per-layer tables after it
    assert text.index("Test accuracy per level") < text.index("Weights remaining per layer")
    # per-layer table at level 1: fc1 keeps 188160 of 235200 (80.0%), fc3 900 of 1000
    assert "188160" in text and "235200" in text and "300x784" in text
    kept1 = sum(layer_counts(3)[1].values())
    total = 266200
    assert f"{kept1}  {total}" in text
    assert f"{total / kept1:.2f}x compression" in text
    # level 3: 100 / remaining compression
    wr = weights_remaining(3)
    assert f"{100 / wr[3]:.2f}x" in text
    assert f"{wr[2]:.1f}% of weights remaining" in text
    # accuracy table: single replicate, values rounded to 2 decimals, no ±
    assert f"{acc_end('ticket', 0, 2):.2f}" in text
    assert f"{es_acc('random_prune', 0, 3):.2f}" in text
    assert "±" not in text.split("Test accuracy per level")[1].split("Mean")[0]
    for b in BRANCHES:
        assert b in text


def test_table_rows_are_aligned(tmp_path):
    run = make_run(tmp_path / "run", replicates=3)
    lines = report(run).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("level "))
    rule, rows = lines[start + 1], lines[start + 2 : start + 6]
    assert set(rule) == {"-"}
    assert all(len(r) == len(rule) for r in rows)  # last column right-aligned to the rule
    assert [r.split()[0] for r in rows] == ["0", "1", "2", "3"]


def test_md_report_three_replicates(tmp_path):
    run = make_run(tmp_path / "run", replicates=3)
    text = report(run, fmt="md")
    assert text.startswith("# LTH report: run")
    assert "## Test accuracy per level" in text and "### Level 0" not in text
    assert "### Level 0" in report(run, fmt="md", layers=True)
    header = next(line for line in text.splitlines() if line.startswith("| level"))
    assert "ticket test %" in header and "random_prune ES iter" in header
    row2 = next(line for line in text.splitlines() if line.startswith("| 2 |"))
    cells = [c.strip() for c in row2.strip("|").split("|")]
    vals = [acc_end("ticket", r, 2) for r in range(3)]
    assert cells[1] == f"{weights_remaining(3)[2]:.1f}"
    assert cells[2] == f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}"
    es = [es_iter("reinit", r, 2) for r in range(3)]
    assert cells[7] == f"{statistics.mean(es):.0f} ± {statistics.stdev(es):.0f}"
    assert "|---:|" in text or "|:---|" in text


def test_report_marks_diverged(tmp_path):
    run = make_run(tmp_path / "run", replicates=3, diverged={("ticket", 1, 2)})
    text = report(run)
    vals = [acc_end("ticket", r, 2) for r in (0, 2)]
    assert f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f} (n=2)" in text
    assert "ticket replicate 1 at level 2 diverged at iteration 700" in text


def test_csv_report(tmp_path):
    run = make_run(tmp_path / "run", replicates=3, branches=("ticket", "reinit"))
    rows = list(csv.DictReader(io.StringIO(report(run, fmt="csv"))))
    assert len(rows) == 2 * 4
    assert [(r["branch"], int(r["level"])) for r in rows] == [
        (b, lv) for b in ("ticket", "reinit") for lv in range(4)
    ]
    for r in rows:
        b, lv = r["branch"], int(r["level"])
        acc = [acc_end(b, k, lv) for k in range(3)]
        es = [es_iter(b, k, lv) for k in range(3)]
        assert float(r["weights_remaining"]) == pytest.approx(weights_remaining(3)[lv])
        assert int(r["n"]) == 3 and int(r["replicates"]) == 3 and int(r["diverged"]) == 0
        assert float(r["test_acc_mean"]) == pytest.approx(statistics.mean(acc))
        assert float(r["test_acc_std"]) == pytest.approx(statistics.stdev(acc))
        assert float(r["early_stop_iteration_mean"]) == pytest.approx(statistics.mean(es))
        assert float(r["test_acc_at_early_stop_mean"]) == pytest.approx(statistics.mean(acc) - 0.25)


def test_csv_report_single_replicate_has_empty_std(tmp_path):
    run = make_run(tmp_path / "run", config=False)
    rows = list(csv.DictReader(io.StringIO(report(run, fmt="csv"))))
    assert len(rows) == 3 * 4
    assert all(r["test_acc_std"] == "" and r["n"] == "1" for r in rows)


# ----------------------------------------------------------------------------- --output


@pytest.mark.parametrize(
    "target",
    [
        "summary.csv",
        "metrics.csv",
        "config.toml",
        "summary_stats.csv",
        "analysis.csv",
        ".lth-run",
        ".lth/progress.json",
        ".lth/report.txt",
        "ticket/0/level_01/mask.safetensors",
        "ticket/0/level_01/report.md",
        "ticket",
        "plots/curves.png",
        "sub/../layers.csv",
        ".",
    ],
)
def test_report_output_refuses_the_run_folders_own_files(tmp_path, capsys, target):
    from lth.analysis.report import save_report
    from lth.cli import main

    run = make_run(tmp_path / "run")
    (run / "ticket" / "0" / "level_01").mkdir(parents=True)
    (run / "sub").mkdir()
    before = {p: p.read_bytes() if p.is_file() else None for p in sorted(run.rglob("*"))}
    with pytest.raises(LTHError, match="is a file of the run folder .* that lth writes"):
        save_report(run, run / target)
    assert main(["report", str(run), "--output", str(run / target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lth writes (or in one of its folders); choose" in err
    (tmp_path / "link").symlink_to(run)  # the same file through a linked folder
    if target != ".":  # (link/. is the link itself, which a write would replace)
        with pytest.raises(LTHError, match="that lth writes"):
            save_report(run, tmp_path / "link" / target)
    assert {p: p.read_bytes() if p.is_file() else None for p in sorted(run.rglob("*"))} == before


def test_report_output_elsewhere_or_beside_the_runs_files(tmp_path):
    from lth.analysis.report import SIGNATURES, save_report

    run = make_run(tmp_path / "run")
    for target in (tmp_path / "r.md", run / "report.md", run / "plots" / "notes.md"):
        assert save_report(run, target, "md") == target
        assert target.read_text() == f"{SIGNATURES['md']}\n{report(run, 'md')}"


# ----------------------------------------------------------------------------- formats


def test_per_layer_tables_only_on_request(tmp_path):
    run = make_run(tmp_path / "run")
    for fmt in ("table", "md", "latex"):
        plain, layered = report(run, fmt), report(run, fmt, layers=True)
        assert "fc1.weight" not in plain and "188160" not in plain
        assert "fc1.weight" in layered and "188160" in layered
        assert layered.startswith(plain.rstrip("\n").split("\n")[0])
    with pytest.raises(LTHError, match="--layers is not available with --format csv"):
        report(run, "csv", layers=True)


def test_latex_report(tmp_path):
    run = make_run(tmp_path / "my_run", replicates=3)
    text = report(run, "latex")
    assert "\\begin{tabular}{rrrrrrrrrrr}" in text and "\\toprule" in text
    assert "\\bottomrule" in text and "\\end{table}" in text and "booktabs" in text
    assert "\\multicolumn{3}{c}{random\\_prune}" in text and "\\cmidrule(lr){3-5}" in text
    assert "test \\%" in text and "n = 3 replicates" in text
    vals = [acc_end("ticket", r, 2) for r in range(3)]
    row = next(line for line in text.splitlines() if line.startswith("2 & "))
    cells = [c.strip() for c in row.removesuffix("\\\\").split("&")]
    assert cells[2] == f"{statistics.mean(vals):.2f} $\\pm$ {statistics.stdev(vals):.2f}"
    # nothing unescaped: every % or _ outside comments is escaped
    body = [line for line in text.splitlines() if not line.startswith("%")]
    for line in body:
        assert "%" not in line.replace("\\%", "") and "_" not in line.replace("\\_", "")


def test_latex_escape():
    from lth.analysis.tables import latex_escape

    assert latex_escape("a_b 5% & #1 {x} ~^\\ ±") == (
        "a\\_b 5\\% \\& \\#1 \\{x\\} \\textasciitilde{}\\textasciicircum{}\\textbackslash{} $\\pm$"
    )


# ----------------------------------------------------------------------------- several runs


def seed_runs(base, count=2, replicates=1, **kw):
    """Run folders of one study run as separate jobs: the same settings but the seed."""
    return [
        make_run(
            base / f"lenet-20250101-12000{i}",
            replicates=replicates,
            shift=0.3 * i,
            settings=f"seed = {i}",
            **kw,
        )
        for i in range(count)
    ]


def test_report_pools_runs_that_differ_only_in_seed(tmp_path):
    a, b = seed_runs(tmp_path)
    text = report([a, b])
    assert "2 runs pooled (seed 0; seed 1)" in text
    assert "n = 2 replicates: 2 runs that differ only in seed, 1 replicate each" in text
    vals = [acc_end("ticket", 0, 2), acc_end("ticket", 0, 2) + 0.3]
    want = f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}"
    row = next(line for line in text.splitlines() if line.split()[:1] == ["2"])
    assert want in row and "(n=" not in row
    rows = list(csv.DictReader(io.StringIO(report([a, b], "csv"))))
    assert list(rows[0]) == list(csv.DictReader(io.StringIO(report(a, "csv"))).fieldnames)
    ticket2 = next(r for r in rows if (r["branch"], r["level"]) == ("ticket", "2"))
    assert (ticket2["n"], ticket2["replicates"]) == ("2", "2")
    assert float(ticket2["test_acc_mean"]) == pytest.approx(statistics.mean(vals))
    assert float(ticket2["test_acc_std"]) == pytest.approx(statistics.stdev(vals))
    md = report([a, b], "md")
    assert "| ticket test % |" in md and f"| {want} |" in md


def test_pooled_replicates_and_diverged(tmp_path):
    a, b = seed_runs(tmp_path, replicates=2, diverged={("ticket", 1, 2)})
    text = report([a, b])
    vals = [acc_end("ticket", 0, 2), acc_end("ticket", 0, 2) + 0.3]  # replicate 1 diverged
    assert f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f} (n=2)" in text
    assert "n = 4 replicates" in text and "2 replicates each" in text
    assert "ticket replicate 1 (seed 1) at level 2 diverged at iteration 700" in text


def test_report_side_by_side_when_settings_differ(tmp_path):
    a = make_run(tmp_path / "a", settings="rate = 0.2")
    b = make_run(tmp_path / "b", settings="rate = 0.3", shift=1.0, replicates=2)
    text = report([a, b])
    assert "2 runs side by side" in text and "they differ in rate, replicates" in text
    lines = text.splitlines()
    assert "  rate 0.2, replicates 1: " in text  # where each column's run is
    group = next(line for line in lines if "rate 0.2, replicates 1" in line and ": " not in line)
    assert "rate 0.3, replicates 2" in group
    head = lines[lines.index(group) + 1].split()
    assert head[:4] == ["branch", "level", "remaining", "%"]  # one shared column
    row = next(line for line in lines if line.startswith("reinit") and line.split()[1] == "3")
    assert f"{acc_end('reinit', 0, 3):.2f}" in row
    b_vals = [acc_end("reinit", r, 3) + 1.0 for r in range(2)]
    assert f"{statistics.mean(b_vals):.2f} ± {statistics.stdev(b_vals):.2f}" in row
    rows = list(csv.DictReader(io.StringIO(report([a, b], "csv"))))
    assert list(rows[0])[:3] == ["run", "rate", "replicates"] and len(rows) == 2 * 3 * 4
    assert {r["rate"] for r in rows} == {"0.2", "0.3"}
    latex = report([a, b], "latex", labels=["$p=0.2$", "p = 0.3"])
    assert "\\multicolumn{3}{c}{\\$p=0.2\\$}" in latex and "{p = 0.3}" in latex
    # the same seed twice is not two replicates: side by side, under the folder names
    c = make_run(tmp_path / "c")
    same = make_run(tmp_path / "same")
    text = report([c, same])
    assert "side by side" in text and "c: " in text and "same: " in text


def test_report_on_a_sweep_folder_and_labels(tmp_path):
    seed_runs(tmp_path / "sweep", count=3)
    (tmp_path / "sweep" / "notes").mkdir()  # not a run folder: left out
    text = report(tmp_path / "sweep")
    assert "3 runs pooled (seed 0; seed 1; seed 2)" in text and "n = 3 replicates" in text
    text = report(tmp_path / "sweep", labels=["x", "y", "z"])
    assert "3 runs pooled (x; y; z)" in text
    with pytest.raises(LTHError, match="2 labels for 3 run folders"):
        report(tmp_path / "sweep", labels=["x", "y"])


def test_cli_report_several_runs(tmp_path, capsys):
    from lth.cli import main

    a, b = seed_runs(tmp_path)
    assert main(["report", str(a), str(b), "--format", "latex", "--labels", "s0,s1"]) == 0
    out = capsys.readouterr().out
    assert "2 runs pooled (s0; s1)" in out and "n = 2 replicates" in out
    assert main(["report", str(a), str(b), "--layers"]) == 0
    out = capsys.readouterr().out
    assert "Weights remaining per layer (ticket, replicate 0; all runs)" in out
    assert main(["report", str(a), str(b), "--labels", "one"]) == 2
    assert "1 labels for 2 run folders" in capsys.readouterr().err
    assert main(["report", str(a), "--format", "csv", "--layers"]) == 2
    target = tmp_path / "table.tex"
    assert main(["report", str(a), str(b), "--format", "latex", "--output", str(target)]) == 0
    signature, title = target.read_text().splitlines()[:2]
    assert signature.startswith("% written by lth report") and title.startswith(
        "% LTH report: 2 runs pooled"
    )
    assert main(["report", str(a), str(b), "--output", str(b / "summary.csv")]) == 2


# ----------------------------------------------------------------------------- progress


class _Trainer:
    def __init__(self, iteration, acc=97.5):
        self.iteration = iteration
        self.masks = {"w": torch.ones(10, dtype=torch.bool)}
        self.histories = [type("H", (), {"val_acc": [acc]})()]


def _config(levels=2):
    return type("C", (), {"levels": levels, "controls": ("reinit", "random_prune")})()


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal(capsys):
    from lth.progress import Progress

    progress = Progress(_config(), iterations=200, group_size=2, quiet=False)
    assert progress.plain  # pytest captures stderr: not a terminal
    for group in (0, 1):
        for it in (0, 100, 200):
            progress.hook(1, group, _Trainer(it))
    progress.close()
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\r" not in err
    assert err.splitlines() == [
        "level 1/2: 100.0% weights remaining, training for 200 iterations",
        "level 1/2: iteration 0/200, 100.0% remaining, val acc 97.50%",
        "level 1/2: iteration 100/200, 100.0% remaining, val acc 97.50%",
        "level 1/2: iteration 200/200, 100.0% remaining, val acc 97.50%",
        "level 1/2, group 2: iteration 0/200, 100.0% remaining, val acc 97.50%",
        "level 1/2, group 2: iteration 100/200, 100.0% remaining, val acc 97.50%",
        "level 1/2, group 2: iteration 200/200, 100.0% remaining, val acc 97.50%",
    ]
    quiet = Progress(_config(), iterations=200, group_size=2, quiet=True)
    quiet.hook(0, 0, _Trainer(100))
    assert capsys.readouterr().err == ""


def test_progress_bar_total_is_the_levels_iterations():
    from lth.progress import Progress

    for group_size in (1, 2, 16):  # the groups depend on threads and memory; the total not
        progress = Progress(_config(), iterations=300, group_size=group_size, quiet=False,
                            plain=False)  # fmt: skip
        progress.hook(0, 0, _Trainer(100))
        assert (progress.bar.total, progress.bar.n) == (300, 100)
        progress.hook(0, 1, _Trainer(50))  # the next group starts the bar again
        assert (progress.bar.total, progress.bar.n) == (300, 50)
        assert "group 2" in progress.bar.desc
        progress.close()

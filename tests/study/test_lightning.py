"""IMP with a Lightning ``Trainer`` inside ``train=fn``: the guide's example, 2 levels of a tiny
MLP on a slice of real MNIST, gives a run folder that ``lth verify`` passes. Lightning is
imported only here (``pip install 'lth[lightning]'``)."""

from __future__ import annotations

import logging
import warnings

import pytest

pytest.importorskip("lightning")

from helpers import guide_example, mnist_slice  # noqa: E402
from lth import ExperimentConfig, run_experiment  # noqa: E402
from lth.cli import main  # noqa: E402
from lth.configfile import read_run_info  # noqa: E402
from lth.runfolder.csvio import read_csv  # noqa: E402
from lth.runfolder.readers import load_summary  # noqa: E402

pytestmark = pytest.mark.usefixtures("no_figures")  # none of these tests looks at figures


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here trains on one thread (see conftest)."""


def test_lightning_trainer_inside_imp_passes_verify(tmp_path, monkeypatch):
    """Every network (ticket, reinit and random-pruning controls, both pruned levels) trains
    in its own Lightning Trainer, stopped by the guide's callback after exactly the level's
    budget; AdamW's decoupled weight decay leaves pruned weights at 0 (lth verify's
    pruned-zero), and the masks, rewinds, controls and tables all check out."""
    monkeypatch.chdir(tmp_path)  # anything Lightning writes goes here
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    mlp = guide_example("sgd_loop.py")["mlp"]
    train = guide_example("lightning_loop.py")["train"]
    data = mnist_slice(1000, 500, val_size=200)
    config = ExperimentConfig(levels=2, iterations=40, eval_every=20, batch_size=50,
                              val_size=200)  # fmt: skip
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice (DataLoader workers, ...)
        results = run_experiment(config, data, model=mlp(data.input_shape, data.num_classes),
                                 train=train, out=out, quiet=True, device="cpu")  # fmt: skip
    assert len(results) == 7  # the dense network once, then ticket and 2 controls per level
    assert main(["verify", str(out)]) == 0
    ticket = [s for s in load_summary(out) if s.branch == "ticket"]
    assert [s.level for s in ticket] == [0, 1, 2] and ticket[0].test_acc > 70.0
    ends = {r["iteration"] for r in read_csv(out / "metrics.csv") if r["level"] == "2"}
    assert ends == {"0", "20", "40"}
    assert read_run_info(out)["source"]["train"] == "your_loop_example:train"

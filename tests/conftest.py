"""Fixtures and helpers shared by the test files."""

from __future__ import annotations

import pytest
import torch

import lth.data as data


@pytest.fixture
def offline_and_isolated(monkeypatch, tmp_path):
    """No test may touch the network, the user's cache or a stray LTH_DATA_DIR."""

    def no_network(url, dest):
        raise AssertionError(f"test tried to download {url}")

    monkeypatch.setattr(data, "_download", no_network)
    monkeypatch.delenv("LTH_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture(scope="module")
def one_thread():
    """Train on one thread: as fast as two for these small networks, and far less slowed down
    when other processes share the CPU. (Results are compared only between runs that use the
    same number of threads.)"""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def assert_one_line(exc: pytest.ExceptionInfo, *needles: object) -> str:
    """The exception's message is one line and names every needle."""
    msg = str(exc.value)
    assert msg and "\n" not in msg and "\r" not in msg, msg
    for needle in needles:
        assert str(needle) in msg, (needle, msg)
    return msg

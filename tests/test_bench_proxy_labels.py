"""bench/proxy_labels.py's GPU utilisation sampler: samples on CUDA, says why not elsewhere or without pynvml."""

from __future__ import annotations

import time

import pytest
import torch

from bench.proxy_labels import UtilisationSampler


def test_the_sampler_reports_why_it_has_no_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    with UtilisationSampler("cpu") as cpu:
        pass
    assert cpu.summary() == {"mean_percent": None, "reason": "not a CUDA device"}

    def missing(device=None):
        raise ModuleNotFoundError("pynvml does not seem to be installed")

    monkeypatch.setattr(torch.cuda, "utilization", missing)
    with UtilisationSampler("cuda", period=0.01) as cuda:
        time.sleep(0.1)
    summary = cuda.summary()
    assert summary["mean_percent"] is None and "pynvml" in summary["reason"]


def test_the_sampler_averages_what_it_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    readings = iter([20.0, 80.0] * 1000)
    monkeypatch.setattr(torch.cuda, "utilization", lambda device=None: next(readings))
    with UtilisationSampler("cuda:0", period=0.005) as sampler:
        deadline = time.time() + 5
        while len(sampler.samples) < 4 and time.time() < deadline:
            time.sleep(0.01)
    summary = sampler.summary()
    assert summary["samples"] >= 4 and 20.0 <= summary["mean_percent"] <= 80.0

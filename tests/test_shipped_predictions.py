"""Every shipped weights file predicts what it predicted before the training-engine and SBI-core refactors
(recorded at commit 888a245 by tests/shipped_support.py; gsr-fused re-recorded when its network changed,
2026-12-03 #3, and when it became the int8 graph, #4): summary statistics of each map and its score, within a tolerance that leaves room for the
runtime chosen by measurement (ONNX Runtime or torch) and another CPU's rounding, far below what a changed
weight, pre-processing or fusion moves."""
from __future__ import annotations

import json

import pytest

import shipped_support as S

RECORDED = {k: v for k, v in json.loads(S.FIXTURE.read_text(encoding="utf-8")).items() if not k.startswith("_")}


@pytest.fixture(scope="module")
def now():
    return S.compute()


def test_every_shipped_model_is_covered(now):
    assert sorted(now) == sorted(RECORDED)
    assert {k.split("/")[0] for k in now} == {*S.DETECTORS, "faces", "gan-blender"}
    assert any(v[0] > 0.05 for k, v in RECORDED.items() if k.startswith("copymove/"))  # a copy is found


@pytest.mark.parametrize("case", sorted(RECORDED))
def test_predictions_are_unchanged(now, case):
    assert now[case] == pytest.approx(RECORDED[case], rel=2e-3, abs=2e-3), case

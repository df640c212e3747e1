"""Rheometer logs: the E031 CSV layout and Anton Paar RheoCompass exports."""
from __future__ import annotations

import numpy as np
import pytest

from ainerd_core.errors import InputError
from ainerd_core.readers.rheology import read_rheology
from beamline_fixtures import write_rheocompass


def _interval(t0, n, rate, stress):
    t = t0 + np.arange(n) * 10.0
    s = np.linspace(stress, stress / 2, n)
    return dict(time=t, shear_rate=np.full(n, rate), shear_stress=s, viscosity=s / max(rate, 1e-3))


def test_rheocompass_utf16_decimal_comma(tmp_path):
    iv = _interval(0.0, 12, 30.0, 1234.5)
    path = tmp_path / "log.txt"
    write_rheocompass(path, [iv], decimal_comma=True)
    assert path.read_bytes()[:2] == b"\xff\xfe"  # BOM, as RheoCompass writes it
    assert ",5" in path.read_bytes().decode("utf-16")
    r = read_rheology(path, "auto", offset=-200.0)
    np.testing.assert_allclose(r["time"], iv["time"] - 200.0)
    np.testing.assert_allclose(r["shear_stress"], iv["shear_stress"], rtol=1e-5)
    np.testing.assert_allclose(r["shear_rate"], 30.0)
    np.testing.assert_allclose(r["viscosity"], iv["viscosity"], rtol=1e-5)
    # the explicit format gives the same
    r2 = read_rheology(path, "rheocompass", offset=-200.0)
    np.testing.assert_array_equal(r2["time"], r["time"])


def test_rheocompass_units_and_intervals(tmp_path):
    # stress in kPa, viscosity in mPa·s, time in min, two intervals whose clock restarts at 0
    a = _interval(0.0, 5, 100.0, 20.0)
    b = _interval(0.0, 4, 0.01, 1.0)
    a["time"] = a["time"] / 60.0
    b["time"] = (b["time"] + 1.0) / 60.0
    path = tmp_path / "units.txt"
    write_rheocompass(path, [a, b], decimal_comma=False, encoding="utf-8-sig", time_unit="min",
                      stress_unit="kPa", viscosity_unit="mPa·s")
    r = read_rheology(path)
    assert r["time"].size == 9
    np.testing.assert_allclose(r["shear_stress"][:5], a["shear_stress"] * 1e3, rtol=1e-5)
    np.testing.assert_allclose(r["viscosity"][:5], a["viscosity"] * 1e-3, rtol=1e-5)
    np.testing.assert_allclose(r["time"][:5], a["time"] * 60.0, rtol=1e-5)
    # second interval placed after the first (its clock restarted)
    assert np.all(np.diff(r["time"]) > 0)
    np.testing.assert_allclose(r["time"][5:], b["time"] * 60.0 + r["time"][4], rtol=1e-5)


def test_e031_csv_layout(e031_dir):
    r = read_rheology(e031_dir / "rheology.csv", offset=-200.0)
    assert r["time"].size == 560
    raw = np.genfromtxt(e031_dir / "rheology.csv", delimiter=",", names=True)
    np.testing.assert_allclose(r["time"], raw["time"] - 200.0)
    np.testing.assert_allclose(r["shear_stress"], raw["shear_stress"])
    np.testing.assert_allclose(r["shear_rate"], raw["shear_rate"])
    # the last pre-shear point (100 1/s) is before XPCS time 0, the first rest point after it
    assert r["shear_rate"][r["time"] < 0][-1] == 100.0
    assert abs(r["shear_rate"][r["time"] > 0][0]) < 1e-3


def test_csv_units_in_header(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("Time [min],Shear Stress [kPa],Shear Rate [1/s]\n0,1.5,10\n1,2.5,10\n")
    r = read_rheology(p, offset=5)
    np.testing.assert_allclose(r["time"], [5, 65])
    np.testing.assert_allclose(r["shear_stress"], [1500, 2500])
    assert np.isnan(r["viscosity"]).all()


@pytest.mark.parametrize("content, match", [
    (b"", "empty"),
    (b"  \n\n", "empty"),
    ("time,shear_stress\n".encode(), "no data rows"),
    ("time,viscosity\n1,2\n".encode(), "no shear stress column"),
    ("time,shear_stress\n1,abc\n".encode(), "line 2"),
    ("time,shear_stress\n1,2\n".encode("utf-16-le"), "wrong encoding"),
    ("temps,contrainte\n1,2\n".encode("latin-1") + b"\xe9\xe8\n", "wrong encoding"),
    ("Time [fortnights],Shear Stress\n1,2\n".encode(), "unknown unit"),
])
def test_bad_logs(tmp_path, content, match):
    p = tmp_path / "bad.csv"
    p.write_bytes(content)
    with pytest.raises(InputError, match=match) as info:
        read_rheology(p)
    assert str(p) in str(info.value)

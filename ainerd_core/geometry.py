"""Sector geometry of a rheo-XPCS detector: azimuthal sectors, flow and vorticity classes.

Angles are in degrees. The flow axis angle is data (a dataset attribute ``flow_axis_deg``),
never a constant in code; the vorticity axis is perpendicular to it in the detector plane.
"""
from __future__ import annotations

import numpy as np

FLOW, VORTICITY, OTHER = "flow", "vorticity", "other"


def sector_center_deg(sector, n_sectors: int = 18):
    """Centre angle (degrees, 0..360) of 1-based sector numbers of equal width.

    Sector k covers [(k-1) w, k w) with w = 360 / n_sectors, so with 18 sectors of 20 degrees
    sector 5 is centred on 90 deg and sector 14 on 270 deg (the paper's flow sectors).
    """
    sector = np.asarray(sector)
    width = 360.0 / n_sectors
    return (sector - 1) * width + width / 2.0


def axial_distance_deg(phi, axis_deg):
    """Smallest angle (degrees, 0..90) between directions phi and an axis (axis and axis+180
    are the same axis)."""
    d = np.mod(np.asarray(phi, dtype=float) - axis_deg, 180.0)
    return np.minimum(d, 180.0 - d)


def sector_class(phi, flow_axis_deg: float, tolerance_deg: float = 10.0):
    """Classify directions as 'flow', 'vorticity' or 'other'.

    Parameters
    ----------
    phi : array_like, shape (N,)
        Azimuthal angle of each map's q-bin, degrees.
    flow_axis_deg : float
        Azimuth of the flow direction on the detector, degrees.
    tolerance_deg : float
        A map belongs to an axis if its phi is within this many degrees of it. With 18
        sectors of 20 deg and the flow axis at 90 deg, 10 deg gives the paper's classes
        (flow: sectors 5, 14; vorticity: 1, 9, 10, 18).

    Returns
    -------
    numpy.ndarray of str, shape (N,)
    """
    phi = np.asarray(phi, dtype=float)
    out = np.full(phi.shape, OTHER, dtype=object)
    out[axial_distance_deg(phi, flow_axis_deg + 90.0) <= tolerance_deg + 1e-9] = VORTICITY
    out[axial_distance_deg(phi, flow_axis_deg) <= tolerance_deg + 1e-9] = FLOW
    return out.astype(str)

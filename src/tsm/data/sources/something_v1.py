"""Something-Something V1, in the 20BN CSV format (:mod:`tsm.data.sources.twentybn`)."""

from __future__ import annotations

from tsm.data.sources.twentybn import TwentyBNCsv


class SomethingV1(TwentyBNCsv):
    """Something-Something V1: 174 object interactions, 108,499 clips of JPEG frames.

    Several classes are left/right mirrors of each other and no flip map for V1's labels is
    established, so horizontal flipping is disabled (``flip_allowed = False``).
    """

    name = "sthv1"
    prefix = "something-something-v1"
    frames_dir = "20bn-something-something-v1"
    flip_allowed = False

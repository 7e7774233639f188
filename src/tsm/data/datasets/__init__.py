"""Readers of the public video datasets in their publishers' layouts, and of custom data."""

from tsm.data.datasets.base import Sample, VideoSource
from tsm.data.datasets.custom import Custom
from tsm.data.datasets.hmdb51 import HMDB51
from tsm.data.datasets.kinetics import Kinetics400
from tsm.data.datasets.sthv2 import SomethingV2
from tsm.data.datasets.twentybn import Jester, SomethingV1
from tsm.data.datasets.ucf101 import UCF101

__all__ = ["HMDB51", "UCF101", "Custom", "Jester", "Kinetics400", "Sample", "SomethingV1", "SomethingV2", "VideoSource"]

"""Readers of the public video datasets in their publishers' layouts, and of custom data."""

from tsm.data.sources.base import Sample, VideoSource
from tsm.data.sources.custom import Custom
from tsm.data.sources.hmdb51 import HMDB51
from tsm.data.sources.jester import Jester
from tsm.data.sources.kinetics import Kinetics400
from tsm.data.sources.something_v1 import SomethingV1
from tsm.data.sources.something_v2 import SomethingV2
from tsm.data.sources.ucf101 import UCF101

__all__ = ["HMDB51", "UCF101", "Custom", "Jester", "Kinetics400", "Sample", "SomethingV1", "SomethingV2", "VideoSource"]

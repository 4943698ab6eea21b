"""People clustering in video (thesis §2.1.1): C1C and the FINCH-style baseline (`c1c.py`), MuHPC (`muhpc.py`),
their hierarchy (`hierarchy.py`) and the blocked first-neighbour search on device (`neighbours.py`)."""

from storyjax.clustering.c1c import c1c, c1c_partitions, finch
from storyjax.clustering.muhpc import MuhpcThresholds, muhpc
from storyjax.clustering.neighbours import NeighbourSearch

__all__ = ["MuhpcThresholds", "NeighbourSearch", "c1c", "c1c_partitions", "finch", "muhpc"]

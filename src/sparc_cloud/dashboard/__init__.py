"""The live web dashboard of a run: `sparc-cloud dashboard [RUN_DIR]` and `sparc-cloud run --dashboard`."""

from sparc_cloud.dashboard.server import Dashboard
from sparc_cloud.dashboard.state import RunView

__all__ = ["Dashboard", "RunView"]

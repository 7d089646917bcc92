"""``python -m app``: one replica (app.main.main).

With more than one worker (DF_WORKERS), prometheus_client must know its multiprocess directory
before it is first imported, since each metric picks its storage when it is created: it is set up
here, before app.main imports anything. A directory given in PROMETHEUS_MULTIPROC_DIR (a volume of
the operator's) is emptied first, as prometheus_client requires between runs.
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from app.core.config import get_settings

settings = get_settings()
if settings.worker_count > 1:
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        for stale in Path(given).glob("*.db"):
            stale.unlink()
    else:
        made = tempfile.mkdtemp(prefix="df-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = made
        # Workers leave through os._exit, so this runs in the supervisor only.
        atexit.register(shutil.rmtree, made, True)

from app.main import main  # noqa: E402  (after the metrics directory, see above)

main(settings)

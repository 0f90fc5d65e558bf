"""Container images the components run in (see images/). On a cluster the image holds this
package; locally ``kfp.local.SubprocessRunner`` ignores the image and runs in this venv."""

from __future__ import annotations

import os

from rlhf import __version__

REGISTRY = os.environ.get("RLHF_IMAGE_REGISTRY", "ghcr.io/rlhf-project")
CPU_IMAGE = os.environ.get("RLHF_CPU_IMAGE", f"{REGISTRY}/rlhf:{__version__}-cpu")

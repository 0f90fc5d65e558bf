"""Keep credentials out of everything we write: messages, MLflow params and tags, reports.

Credentials reach the process only through the standard environment variables and config files
(boto3's and MLflow's own); nothing in the package reads them, except here, to know which
strings must never be shown.
"""

from __future__ import annotations

import os
import re

# Environment variables whose values are secrets (or identify one).
SECRET_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "KF_PIPELINES_TOKEN",
)
MASK = "***"
# user:password@ (or token@) in a URL such as http://user:pw@mlflow:5000 or postgresql://...
_URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def secret_values() -> list[str]:
    """The current values of ``SECRET_VARIABLES`` (long enough to be meaningful)."""
    values = (os.environ.get(name, "") for name in SECRET_VARIABLES)
    return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with every known secret value and every URL user-info replaced by ``***``."""
    text = str(text)
    for value in secret_values():
        text = text.replace(value, MASK)
    return _URL_USERINFO.sub(MASK + "@", text)

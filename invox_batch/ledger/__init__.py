"""What earlier runs already paid for: a transactional ledger every run sharing it consults.

SQLite by default (``<state>/ledger.sqlite3``, embedded); PostgreSQL when ``INVOX_LEDGER_URL``
(or ``--ledger-url``, a flow parameter, the Secret block ``invox-ledger-url``) names one, so
runs on different machines pay once per audio identity. Each attempt at an identity is claimed
before it is paid for; each step is committed before the next. The JSON records of earlier
versions are imported on first open.
"""

from ._landed import confirm_landed
from ._owner import Owner
from ._places import Attempt, Generation, audio_identity, place, result_key, upload_key
from ._store import LEASE_ENV, Ledger
from ._url import ENV, SQLITE_NAME, LedgerTarget, has_password, masked, parse_url

__all__ = [
    "ENV",
    "LEASE_ENV",
    "SQLITE_NAME",
    "Attempt",
    "Generation",
    "Ledger",
    "LedgerTarget",
    "Owner",
    "audio_identity",
    "confirm_landed",
    "has_password",
    "masked",
    "parse_url",
    "place",
    "result_key",
    "upload_key",
]

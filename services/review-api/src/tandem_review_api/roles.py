"""Who may call what: the role sets the review API's endpoints admit, named once."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from tandem_shared.auth import Principal, require_role

Reviewer = Annotated[Principal, Depends(require_role("reviewer"))]
# Reads the queue: each sees what they may act on; admins and auditors see all of it.
QueueReader = Annotated[Principal, Depends(require_role("reviewer", "auditor"))]
TaskReader = Annotated[Principal, Depends(require_role("reviewer", "auditor", "service"))]
# Systems that send work in: producers, and Alertmanager with its webhook.
Producer = Annotated[Principal, Depends(require_role("service", "admin"))]
# Oversight: outcomes, flags, the risk register and incidents are read by these...
Overseer = Annotated[Principal, Depends(require_role("senior", "admin", "auditor"))]
# ...and the register and incidents written by these (a senior, only what they own).
Steward = Annotated[Principal, Depends(require_role("senior", "admin"))]
Admin = Annotated[Principal, Depends(require_role("admin"))]
# The policy and its history: admins change it, auditors read it.
PolicyReader = Annotated[Principal, Depends(require_role("admin", "auditor"))]

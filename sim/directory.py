"""placeholder"""
from __future__ import annotations

import threading


class Directory:
    def __init__(self, *, tenant_id: str, domain: str) -> None:
        self.tenant_id, self.domain = tenant_id, domain
        self.lock: threading.RLock = threading.RLock()

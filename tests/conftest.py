"""Every test starts from the settings' defaults: no JOBLEDGER_* variable from the
developer's shell leaks in."""

from __future__ import annotations

import os

for _name in [n for n in os.environ if n.startswith("JOBLEDGER_")]:
    del os.environ[_name]

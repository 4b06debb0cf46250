"""sqlite-utils as the bridge imports it: without numpy or pandas.

When numpy or pandas is installed, sqlite-utils imports it as it loads, to map its number
types to column types. The bridge stores no values of theirs, and numpy alone costs a
process about 12 MB of resident memory (the bridge's modules: 101.5 MB with it, 89.9 MB
without); it is installed with matplotlib, which draws the simulator's charts. So the
bridge's modules take sqlite-utils from here, where the two are hidden while it loads;
either may still be imported afterwards (``drbridge simulate`` draws with matplotlib).
"""

from __future__ import annotations

import sys

# sqlite-utils' optional imports, each tried as it loads (an ImportError leaves it out)
_OPTIONAL = ("numpy", "pandas")

_hidden = [name for name in _OPTIONAL if name not in sys.modules]
for _name in _hidden:
    sys.modules[_name] = None  # type: ignore[assignment]  # importing it raises ImportError
try:
    import sqlite_utils
finally:
    for _name in _hidden:
        if sys.modules.get(_name, ...) is None:
            del sys.modules[_name]

__all__ = ["sqlite_utils"]

"""roomproof wire protocol v1: the one place where the format both sides speak is defined.

Pure Python (PyNaCl, pydantic, the standard library); no hardware imports, so central
imports it too.
"""

VERSION = 1

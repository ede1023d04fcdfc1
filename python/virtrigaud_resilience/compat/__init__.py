"""Drop-in replacements for popular resilience libraries, on the native core.

Change one import (``from virtrigaud_resilience.compat import tenacity``) and
keep the rest of the program: each drop-in keeps its peer's observable
semantics (hook order, statistics, error messages) and runs the success path
natively. The peers themselves are never imported.
"""

"""Aloft's Python bootstrap. Usage: /usr/bin/python3 -u bootstrap.py

The work is in _aloft_bootstrap, next to this file: a script is compiled
at every start, an imported module is read from its .pyc.
"""

import _aloft_bootstrap

_aloft_bootstrap.main()

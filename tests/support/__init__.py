"""Test helpers shared by the unit, contract and integration suites.

``tests/conftest.py`` puts ``tests/`` on ``sys.path`` (pytest's rootless conftest rule), so
these modules are imported as ``support.<module>`` everywhere -- never as
``tests.support.<module>``, which would load a second copy (and a second backend registry).
"""

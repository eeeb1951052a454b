"""What backends implement, and the little they may use besides.

A backend plugin (storage, file store, broker, agent runtime, password sign-in) imports from
here, :mod:`iapflow.errors`, :mod:`iapflow.ids` and :mod:`iapflow.jsonutil` only; each contract
has a test suite in :mod:`iapflow.testing` that a backend runs against itself.
"""

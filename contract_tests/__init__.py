"""The contract suite every exchange driver plugin must pass.

Run it on an installed plugin::

    pytest --pyargs contract_tests --plugin bybit
"""

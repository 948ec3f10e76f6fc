"""The ``potlut`` command: a thin shell over the library functions the tests call."""

"""The stages' entry points, one thin module each (``python -m pipeline.<stage>``): parse the
arguments, load the stage's params section, call the library in ``components/``.
"""

"""HGRN1/HGRN2 reproduction suite."""
